//! A tiny web app on the standard library only: the routes, a minimal HTTP/1.1 server, and a self-test
//! that serves itself a few requests on a loopback port.
//!
//! It has no dependencies so the quickstart pipeline can build it without network access, and it sticks to
//! Rust 1.63 (Debian bookworm's compiler, which the offline `rust:1-slim` image carries).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

/// The version printed by `app --version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// An HTTP response: status code and plain-text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// `200`, `404`, …
    pub status: u16,
    /// The body, sent as `text/plain; charset=utf-8`.
    pub body: String,
}

impl Response {
    fn ok(body: String) -> Self {
        Response { status: 200, body }
    }
}

/// The greeting for `name`; an empty name greets the world.
pub fn greet(name: &str) -> String {
    let name = name.trim();
    if name.is_empty() {
        "Hello, world!".to_owned()
    } else {
        format!("Hello, {}!", name)
    }
}

/// Answers one request: `GET /` and `GET /greet/<name>` greet, `GET /health` says `ok`, `GET /version` gives
/// the version; other paths are 404 and other methods 405.
pub fn route(method: &str, path: &str) -> Response {
    if method != "GET" {
        return Response {
            status: 405,
            body: format!("method {} not allowed\n", method),
        };
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/" => Response::ok(format!("{}\n", greet(""))),
        "/health" => Response::ok("ok\n".to_owned()),
        "/version" => Response::ok(format!("{}\n", VERSION)),
        _ => match path.strip_prefix("/greet/") {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                Response::ok(format!("{}\n", greet(&percent_decode(name))))
            }
            _ => Response {
                status: 404,
                body: format!("no route for {}\n", path),
            },
        },
    }
}

/// Decodes `%XX` escapes; a malformed escape is kept as written.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Unknown",
    }
}

/// Reads one request from `stream` and writes the answer; the connection is closed afterwards.
pub fn handle(stream: &mut TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; this server has no use for them.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let response = match (parts.next(), parts.next()) {
        (Some(method), Some(path)) => route(method, path),
        _ => Response {
            status: 400,
            body: "bad request\n".to_owned(),
        },
    };
    write!(
        stream,
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        response.status,
        reason(response.status),
        response.body.len(),
        response.body
    )?;
    stream.flush()
}

/// Serves requests on `listener`, one at a time; stops after `limit` connections when it is given.
pub fn serve(listener: &TcpListener, limit: Option<usize>) -> io::Result<()> {
    let mut served = 0;
    for stream in listener.incoming() {
        let mut stream = stream?;
        if let Err(e) = handle(&mut stream) {
            eprintln!("app: request failed: {}", e);
        }
        served += 1;
        if limit.map_or(false, |l| served >= l) {
            break;
        }
    }
    Ok(())
}

/// Sends `GET path` to `addr` and returns the status code and body.
pub fn get(addr: &str, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        path, addr
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response without a header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "response without a status code"))?;
    Ok((status, body.to_owned()))
}

/// The requests the self-test sends, with the status each must get.
pub const SELF_TEST: &[(&str, u16)] = &[
    ("/health", 200),
    ("/", 200),
    ("/greet/quickstart", 200),
    ("/version", 200),
    ("/nope", 404),
];

/// Starts the server on a free loopback port, sends it [`SELF_TEST`], and returns one line per request
/// (`GET /health -> 200 ok`). Fails if a status is not the expected one.
pub fn self_test() -> io::Result<Vec<String>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let server = std::thread::spawn(move || serve(&listener, Some(SELF_TEST.len())));
    let mut lines = Vec::new();
    for (path, want) in SELF_TEST {
        let (status, body) = get(&addr, path)?;
        if status != *want {
            return Err(io::Error::new(
                io::ErrorKind::Other,
                format!("GET {}: status {}, expected {}", path, status, want),
            ));
        }
        lines.push(format!("GET {} -> {} {}", path, status, body.trim_end()));
    }
    server
        .join()
        .map_err(|_| io::Error::new(io::ErrorKind::Other, "the server thread panicked"))??;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name_or_the_world() {
        assert_eq!(greet("Ada"), "Hello, Ada!");
        assert_eq!(greet("  "), "Hello, world!");
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/"), Response::ok("Hello, world!\n".to_owned()));
        assert_eq!(
            route("GET", "/greet/Ada%20L"),
            Response::ok("Hello, Ada L!\n".to_owned())
        );
        assert_eq!(route("GET", "/health?verbose=1").body, "ok\n");
        assert_eq!(route("GET", "/greet/").status, 404);
        assert_eq!(route("GET", "/greet/a/b").status, 404);
        assert_eq!(route("POST", "/").status, 405);
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn serves_itself_over_tcp() {
        let lines = self_test().expect("self-test");
        assert_eq!(lines.len(), SELF_TEST.len());
        assert_eq!(lines[2], "GET /greet/quickstart -> 200 Hello, quickstart!");
        assert!(lines[4].starts_with("GET /nope -> 404"), "{}", lines[4]);
    }
}
