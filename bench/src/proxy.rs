//! A counting proxy in front of the engine: forwards bytes both ways unchanged and counts `POST /query`
//! requests, so the request figure is what went over the wire, not what the SDK believes it sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A proxy on `127.0.0.1:<port>` until dropped.
pub(crate) struct CountingProxy {
    pub(crate) port: u16,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    pub(crate) async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        let _ = relay(client, server, counter).await;
                    }
                });
            }
        });
        Ok(Self { port, count, task })
    }

    /// Requests seen so far.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// Responses are copied as they come; requests are framed (head, then `content-length` bytes of body) so each
// one on a kept-alive connection is counted once.
async fn relay(client: TcpStream, server: TcpStream, counter: Arc<AtomicUsize>) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    let mut reader = BufReader::new(client_read);
    loop {
        let mut head = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).await? == 0 {
                back.abort();
                return Ok(());
            }
            if let Some((name, value)) = header(&line)
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.parse().unwrap_or(0);
            }
            let end = line == b"\r\n" || line == b"\n";
            head.extend_from_slice(&line);
            if end {
                break;
            }
        }
        if is_query(&head) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).await?;
        server_write.write_all(&head).await?;
        server_write.write_all(&body).await?;
    }
}

fn header(line: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(line).ok()?;
    let (k, v) = text.split_once(':')?;
    Some((k.trim(), v.trim()))
}

/// Whether a request head is a `POST /query`.
pub(crate) fn is_query(head: &[u8]) -> bool {
    head.starts_with(b"POST /query ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_heads_are_recognised() {
        assert!(super::is_query(b"POST /query HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert!(!super::is_query(b"GET /query HTTP/1.1\r\n\r\n"));
        assert!(!super::is_query(b"POST /queryx HTTP/1.1\r\n\r\n"));
        assert_eq!(super::header(b"Content-Length: 42\r\n"), Some(("Content-Length", "42")));
    }
}
