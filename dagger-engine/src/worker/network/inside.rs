//! Sockets inside a container's network namespace, made by the engine: a socket stays in the namespace it
//! was made in, so [`Inside`] keeps a thread of its own in the namespace that makes them on request, and the
//! engine serves them from anywhere. Rootless, this is how services are reached (the engine is root of the
//! user namespace that owns every container's network namespace, so it may enter them).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// A job the thread runs.
type Job = Box<dyn FnOnce() + Send>;

/// A thread inside one network namespace, which makes sockets there; it ends when the last handle is
/// dropped (and with it the last hold on the namespace it kept).
#[derive(Debug)]
pub(crate) struct Inside {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Inside {
    /// Starts a thread in the network namespace mounted at `netns`.
    pub(crate) async fn enter(netns: &Path) -> Result<Arc<Self>, String> {
        let path = netns.to_owned();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("drs-inside".into())
            .spawn(move || {
                let entered = std::fs::File::open(&path)
                    .map_err(|e| format!("cannot open the network namespace {}: {e}", path.display()))
                    .and_then(|ns| {
                        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| format!("cannot enter the network namespace {}: {e}", path.display()))
                    });
                let ok = entered.is_ok();
                let _ = tx.send(entered);
                if ok {
                    while let Ok(job) = queue.recv() {
                        job();
                    }
                }
            })
            .map_err(|e| format!("cannot start a thread in a container's network namespace: {e}"))?;
        rx.await
            .map_err(|_| "the thread entering a container's network namespace stopped".to_owned())??;
        Ok(Arc::new(Self { jobs }))
    }

    /// Runs `f` on the thread inside the namespace.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(job)
            .map_err(|_| "the thread inside the network namespace is gone".to_owned())?;
        rx.await
            .map_err(|_| "the thread inside the network namespace is gone".to_owned())
    }

    /// Connects to `to` from inside the namespace.
    pub(crate) async fn connect(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        use rustix::net::{AddressFamily, SocketFlags, SocketType, socket_with};
        let family = if to.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        };
        let made = self
            .run(move || {
                socket_with(
                    family,
                    SocketType::STREAM,
                    SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                    None,
                )
            })
            .await
            .map_err(std::io::Error::other)?;
        let socket = std::net::TcpStream::from(made.map_err(std::io::Error::from)?);
        tokio::net::TcpSocket::from_std_stream(socket).connect(to).await
    }

    /// Listens on each of `addresses` (TCP) inside the namespace.
    pub(crate) async fn listen(&self, addresses: &[SocketAddr]) -> Result<Vec<tokio::net::TcpListener>, String> {
        let addresses = addresses.to_vec();
        let made = self
            .run(move || {
                addresses
                    .iter()
                    .map(|a| {
                        let l = std::net::TcpListener::bind(a)
                            .map_err(|e| format!("cannot listen on {a} in the container's network namespace: {e}"))?;
                        l.set_nonblocking(true)
                            .map_err(|e| format!("cannot listen on {a}: {e}"))?;
                        Ok(l)
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await??;
        made.into_iter()
            .map(|l| tokio::net::TcpListener::from_std(l).map_err(|e| format!("cannot serve a listener: {e}")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh network namespace (root only), mounted at a file of `dir`, on a thread that is then discarded.
    fn fresh_netns(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("ns");
        std::fs::write(&path, "").expect("namespace file");
        let p = path.clone();
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &p).expect("mount the namespace");
            // Its loopback, up (as every container namespace has it).
            let status = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip");
            assert!(status.success());
        })
        .join()
        .expect("the namespace thread");
        path
    }

    #[tokio::test]
    async fn sockets_made_inside_a_namespace_stay_in_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let path = fresh_netns(dir.path());
        let inside = Inside::enter(&path).await.expect("enter");
        // A listener on the namespace's loopback, on an address of 127/8 the host's loopback does not serve.
        let at: SocketAddr = "127.0.0.7:4711".parse().expect("addr");
        let mut listeners = inside.listen(&[at]).await.expect("listen");
        let listener = listeners.pop().expect("one");
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let _ = c.write_all(b"inside").await;
            }
        });
        let mut c = inside.connect(at).await.expect("connect inside");
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"inside");
        // The engine's own namespace does not see it.
        assert!(
            tokio::net::TcpStream::connect(at).await.is_err(),
            "not on the host's loopback"
        );
        drop(inside);
        let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
    }
}
