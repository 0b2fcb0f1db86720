//! Running services: long-lived processes (a container in a network namespace of its own, or a port
//! forwarder) that execs reach over the network while they run; how each is reached is its [`Reach`].
//!
//! [`Services`] keeps one instance per service ID for the engine's session: the first dependent starts it,
//! later ones share it ([`ServiceLease`]s count them), and it stops a short while after the last lease is
//! dropped ([`GRACE`]), when it is stopped by name, or when the engine stops. Starting is done by a future the
//! caller gives (the operations layer knows how to prepare a container); concurrent dependents wait for the
//! one start in flight and all see its outcome.
//!
//! A container service is ready when each of its checked TCP ports accepts a connection from the engine
//! (to its address on the bridge as root; rootless, to its own address, from inside its namespace); should its process exit first, starting fails with its exit code and
//! the last lines it printed. Its process runs with [`Runtime::run_signalled`], so stopping it gracefully
//! sends `SIGTERM` (then `SIGKILL` after [`STOP_TIMEOUT`]), and dropping an instance kills it outright: the
//! run's future is dropped, which kills and deletes the container, and its network namespace goes with the
//! resources it holds.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::model::ids::Digest;
use crate::worker::network::inside::Inside;
use crate::worker::runtime::{LineSink, RunRequest, Runtime};

/// How long an instance outlives its last dependent, so a pipeline's next exec finds it still running.
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// How long a graceful stop waits after `SIGTERM` before it kills the process.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a service's ports may take to accept connections.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The first pause between two tries of a port that does not accept connections yet (doubled each time).
const READY_FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two tries of a port.
const READY_MAX_PAUSE: Duration = Duration::from_millis(50);
/// How many of a service's last output lines are kept for errors.
const LOG_TAIL: usize = 30;

/// Starting or running a service failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ServiceError {
    /// The process ended before its ports accepted connections.
    #[error("exited with code {exit_code} before it was ready{}", tail(logs))]
    ExitedEarly {
        /// Its exit code.
        exit_code: i32,
        /// Its last output lines.
        logs: Vec<String>,
    },
    /// A port never accepted a connection.
    #[error("did not accept connections on port {port}/tcp within {}s{}", READY_TIMEOUT.as_secs(), tail(logs))]
    NotReady {
        /// The port.
        port: u16,
        /// Its last output lines.
        logs: Vec<String>,
    },
    /// Anything else (preparing its filesystem or network, the runtime, a listener).
    #[error("{0}")]
    Other(String),
}

/// The lines of a service's output, as an error shows them.
fn tail(logs: &[String]) -> String {
    if logs.is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; its last output:\n{}", logs.join("\n"))
    }
}

/// The last lines a service printed.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    /// Keeps `line`, forgetting the oldest beyond [`LOG_TAIL`].
    pub(crate) fn push(&self, line: &str) {
        let mut lines = self.0.lock();
        if lines.len() == LOG_TAIL {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    /// The lines kept, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().iter().cloned().collect()
    }
}

/// Where a connection to one port of a service goes.
#[derive(Clone, Debug)]
pub(crate) enum Upstream {
    /// An address the engine reaches from its own network namespace.
    Direct(SocketAddr),
    /// An address inside a container's network namespace, connected to from inside it.
    Inside(Arc<Inside>, SocketAddr),
}

impl Upstream {
    /// A new connection to it.
    pub(crate) async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        match self {
            Upstream::Direct(to) => tokio::net::TcpStream::connect(to).await,
            Upstream::Inside(inside, to) => inside.connect(*to).await,
        }
    }
}

/// How a running service is reached, by the engine and by the containers that bind it.
#[derive(Clone, Debug)]
pub(crate) enum Reach {
    /// At its address on the session's bridge, which the engine and every container reach (as root).
    Bridge(Ipv4Addr),
    /// At its own address inside its network namespace (rootless): the engine connects from inside it, and
    /// containers through forwarders the engine runs in theirs.
    Inside(Arc<Inside>, Ipv4Addr),
    /// Ports of the client host's loopback, each frontend to its backend (a host service, rootless): the
    /// engine connects from its own network namespace, the host's.
    HostLoopback(Vec<(u16, u16)>),
    /// Not from containers: the service is a way to the client's host (a tunnel).
    Host,
}

impl Reach {
    /// Where a connection to the service's `port` goes (`None`: nowhere a container may go).
    pub(crate) fn upstream(&self, port: u16) -> Option<Upstream> {
        match self {
            Reach::Bridge(ip) => Some(Upstream::Direct(SocketAddr::from((*ip, port)))),
            Reach::Inside(inside, ip) => Some(Upstream::Inside(inside.clone(), SocketAddr::from((*ip, port)))),
            Reach::HostLoopback(ports) => ports
                .iter()
                .find(|(front, _)| *front == port)
                .map(|(_, back)| Upstream::Direct(SocketAddr::from((Ipv4Addr::LOCALHOST, *back)))),
            Reach::Host => None,
        }
    }
}

/// A service that is running (or was, and has exited): where it is, and how to stop it. Dropping it kills
/// what still runs.
pub(crate) struct Running {
    /// How it is reached.
    pub(crate) reach: Reach,
    /// The ports it listens on (for a forwarder to the host, the ports it chose).
    pub(crate) ports: Vec<u16>,
    exit: watch::Receiver<Option<i32>>,
    /// A forwarder's own exit (it has no process to report one): set when it is stopped.
    stopped: Option<watch::Sender<Option<i32>>>,
    signals: Option<watch::Sender<Option<&'static str>>>,
    task: tokio::task::JoinHandle<()>,
    /// A forwarder's peers allowed to connect (`None`: anyone who can reach it).
    allowed: Option<Allowed>,
    /// Told when the instance goes (a forwarder has no process whose exit says so).
    on_drop: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// A container service's runtime and container ID.
    container: Option<(Runtime, String)>,
}

/// The peers a forwarder accepts connections from, each counted once per dependent that allowed it.
pub(crate) type Allowed = Arc<Mutex<HashMap<std::net::IpAddr, usize>>>;

/// One dependent's permission to connect to a forwarder: withdrawn when dropped.
pub(crate) struct AllowGuard {
    allowed: Allowed,
    ip: std::net::IpAddr,
}

impl Drop for AllowGuard {
    fn drop(&mut self) {
        let mut allowed = self.allowed.lock();
        if let Some(n) = allowed.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                allowed.remove(&self.ip);
            }
        }
    }
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("reach", &self.reach)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A container still running is killed and deleted now: the engine may be going with its process (a
        // session dropped at the end of a program), and a kill left to a task would never run. Then the run's
        // future is dropped, and what the task holds (filesystem, namespace, the leases of the services it
        // uses) is released.
        if let Some((runtime, id)) = &self.container
            && self.exit_code().is_none()
        {
            runtime.kill_now(id);
        }
        self.task.abort();
        if let Some(f) = self.on_drop.lock().take() {
            f();
        }
    }
}

impl Running {
    /// A running task (a forwarder) reached as `reach`, with `ports`: dropping the instance aborts it.
    /// `allowed` is the forwarder's list of peers, when it keeps one.
    pub(crate) fn task(
        reach: Reach,
        ports: Vec<u16>,
        task: tokio::task::JoinHandle<()>,
        allowed: Option<Allowed>,
    ) -> Self {
        let (stopped, exit) = watch::channel(None);
        Self {
            reach,
            ports,
            exit,
            stopped: Some(stopped),
            signals: None,
            task,
            allowed,
            on_drop: Mutex::new(None),
            container: None,
        }
    }

    /// Its address on the session's bridge, when it has one.
    pub(crate) fn address(&self) -> Option<Ipv4Addr> {
        match self.reach {
            Reach::Bridge(ip) => Some(ip),
            _ => None,
        }
    }

    /// Calls `f` when the instance goes.
    pub(crate) fn on_drop(self, f: impl FnOnce() + Send + 'static) -> Self {
        *self.on_drop.lock() = Some(Box::new(f));
        self
    }

    /// Lets `ip` connect while the guard lives (a forwarder that keeps a list of peers; others accept
    /// whoever reaches them, and give no guard).
    pub(crate) fn allow(&self, ip: Ipv4Addr) -> Option<AllowGuard> {
        let allowed = self.allowed.clone()?;
        let ip = std::net::IpAddr::V4(ip);
        *allowed.lock().entry(ip).or_insert(0) += 1;
        Some(AllowGuard { allowed, ip })
    }

    /// The exit code, once the process has ended.
    pub(crate) fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Waits until the process ends (a forwarder: until it is stopped), returning its exit code.
    pub(crate) async fn wait(&self) -> Option<i32> {
        let mut exit = self.exit.clone();
        exit.wait_for(Option::is_some).await.ok().and_then(|c| *c)
    }

    /// Stops the process: `SIGKILL` when `kill`, else `SIGTERM` and, should it still run after
    /// [`STOP_TIMEOUT`], `SIGKILL`. Returns once it has ended.
    pub(crate) async fn stop(&self, kill: bool) {
        let Some(signals) = &self.signals else {
            self.task.abort();
            if let Some(stopped) = &self.stopped {
                let _ = stopped.send(Some(0));
            }
            return;
        };
        if self.exit_code().is_some() {
            return;
        }
        let _ = signals.send(Some(if kill { "KILL" } else { "TERM" }));
        if tokio::time::timeout(STOP_TIMEOUT, self.wait()).await.is_err() {
            let _ = signals.send(Some("KILL"));
            let _ = tokio::time::timeout(STOP_TIMEOUT, self.wait()).await;
        }
    }
}

/// What starting a container service needs.
pub(crate) struct ContainerService {
    /// The process to run.
    pub(crate) req: RunRequest,
    /// What must live as long as the process (its filesystem, its network namespace, the leases of the
    /// services it uses): dropped when it ends.
    pub(crate) keep: Box<dyn Send>,
    /// How it is reached (its health check too).
    pub(crate) reach: Reach,
    /// The TCP ports to wait for.
    pub(crate) checks: Vec<u16>,
    /// Every port it exposes.
    pub(crate) ports: Vec<u16>,
    /// Receives each output line (also kept for errors).
    pub(crate) on_line: LineSink,
    /// Told the exit code when the process ends, or the error when it could not run.
    pub(crate) on_exit: Box<dyn FnOnce(Result<i32, String>) + Send>,
}

/// Runs a container service and waits until it is ready: each checked port accepts a TCP connection. A
/// process that ends first is [`ServiceError::ExitedEarly`], with its last output.
pub(crate) async fn run_container(runtime: &Runtime, svc: ContainerService) -> Result<Running, ServiceError> {
    let ContainerService {
        req,
        keep,
        reach,
        checks,
        ports,
        on_line,
        on_exit,
    } = svc;
    let logs = LogTail::default();
    let kept = logs.clone();
    let sink: LineSink = Arc::new(move |line: &str, is_err: bool| {
        kept.push(line);
        on_line(line, is_err);
    });
    let (signal_tx, signal_rx) = watch::channel(None);
    let (exit_tx, exit) = watch::channel(None);
    let (error_tx, mut error_rx) = tokio::sync::oneshot::channel::<String>();
    let id = crate::worker::runtime::new_container_id();
    let container = Some((runtime.clone(), id.clone()));
    let runtime = runtime.clone();
    let task = tokio::spawn(async move {
        let result = runtime.run_signalled(&req, sink, signal_rx, id).await;
        drop(keep);
        match result {
            Ok(out) => {
                let _ = exit_tx.send(Some(out.exit_code));
                on_exit(Ok(out.exit_code));
            }
            Err(e) => {
                let _ = error_tx.send(e.to_string());
                // Seen as an exit by whoever waits for one.
                let _ = exit_tx.send(Some(-1));
                on_exit(Err(e.to_string()));
            }
        }
    });
    let running = Running {
        reach,
        ports,
        exit,
        stopped: None,
        signals: Some(signal_tx),
        task,
        allowed: None,
        on_drop: Mutex::new(None),
        container,
    };
    let early = |running: &Running, error_rx: &mut tokio::sync::oneshot::Receiver<String>| {
        if let Ok(e) = error_rx.try_recv() {
            return ServiceError::Other(e);
        }
        ServiceError::ExitedEarly {
            exit_code: running.exit_code().unwrap_or(-1),
            logs: logs.lines(),
        }
    };
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for port in checks {
        let target = running
            .reach
            .upstream(port)
            .ok_or_else(|| ServiceError::Other(format!("port {port} of the service cannot be reached")))?;
        // Tried again soon at first (a small server listens within milliseconds), then less often.
        let mut pause = READY_FIRST_PAUSE;
        loop {
            if running.exit_code().is_some() {
                return Err(early(&running, &mut error_rx));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ServiceError::NotReady {
                    port,
                    logs: logs.lines(),
                });
            }
            let attempt = tokio::time::timeout(Duration::from_secs(1), target.connect());
            tokio::select! {
                connected = attempt => {
                    if matches!(connected, Ok(Ok(_))) {
                        break;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(READY_MAX_PAUSE);
                }
                _ = running.wait() => return Err(early(&running, &mut error_rx)),
            }
        }
    }
    Ok(running)
}

/// Serves each listener in the background: every connection it accepts (from a peer in `allowed`, when
/// given) is joined to a new connection to its target; others are closed at once. Aborting the returned task
/// closes the listeners and every connection; `keep` (a network namespace, the lease of the service
/// connected to) lives as long as the task.
pub(crate) fn spawn_forwarders(
    listeners: Vec<(tokio::net::TcpListener, Upstream)>,
    keep: Box<dyn Send>,
    allowed: Option<Allowed>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _keep = keep;
        // Dropped with this task (when it is aborted): every connection task goes with it.
        let mut connections = tokio::task::JoinSet::new();
        let mut accepting = tokio::task::JoinSet::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::net::TcpStream, Upstream)>(64);
        for (listener, target) in listeners {
            let (tx, allowed) = (tx.clone(), allowed.clone());
            accepting.spawn(async move {
                while let Ok((conn, peer)) = listener.accept().await {
                    if allowed.as_ref().is_some_and(|a| !a.lock().contains_key(&peer.ip())) {
                        continue;
                    }
                    if tx.send((conn, target.clone())).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        while let Some((mut conn, target)) = rx.recv().await {
            connections.spawn(async move {
                if let Ok(mut upstream) = target.connect().await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                }
            });
            // Finished connections are reaped as new ones come.
            while connections.try_join_next().is_some() {}
        }
        std::future::pending::<()>().await;
    })
}

/// Listens on `ports` (TCP, every address) inside the network namespace at `netns` (see [`Inside`]).
pub(crate) async fn listen_in(netns: &std::path::Path, ports: &[u16]) -> Result<Vec<tokio::net::TcpListener>, String> {
    let addresses: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, *p)))
        .collect();
    Inside::enter(netns).await?.listen(&addresses).await
}

/// One service ID's instance: starting, running, or failed to start.
struct Entry {
    /// How many leases use it.
    refs: AtomicUsize,
    started: tokio::sync::OnceCell<Result<Arc<Running>, ServiceError>>,
}

#[derive(Default)]
struct Inner {
    entries: Mutex<HashMap<Digest, Arc<Entry>>>,
    /// Leases held for `Service.start` until `stop` or the end of the session.
    kept: Mutex<HashMap<Digest, ServiceLease>>,
    starts: AtomicUsize,
}

/// The services of one engine: one instance per service ID, shared by its dependents.
#[derive(Clone, Default)]
pub(crate) struct Services {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("running", &self.inner.entries.lock().len())
            .finish()
    }
}

/// A dependent's use of a running service; the service may stop once every lease is dropped.
pub(crate) struct ServiceLease {
    key: Digest,
    entry: Arc<Entry>,
    services: Weak<Inner>,
    running: Arc<Running>,
}

impl std::fmt::Debug for ServiceLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLease")
            .field("key", &self.key)
            .field("running", &self.running)
            .finish()
    }
}

impl ServiceLease {
    /// The running instance.
    pub(crate) fn running(&self) -> &Arc<Running> {
        &self.running
    }
}

impl Drop for ServiceLease {
    fn drop(&mut self) {
        release(&self.key, &self.entry, &self.services);
    }
}

/// Lets go of one use of `entry`: the last one out forgets the instance after [`GRACE`] (when nobody took it
/// up again by then), which stops it.
fn release(key: &Digest, entry: &Arc<Entry>, services: &Weak<Inner>) {
    if entry.refs.fetch_sub(1, Ordering::SeqCst) != 1 {
        return;
    }
    // The timer holds nothing alive: an engine that goes meanwhile takes its instances with it at once.
    let (key, entry, services) = (key.clone(), Arc::downgrade(entry), services.clone());
    let forget = move || {
        let (Some(inner), Some(entry)) = (services.upgrade(), entry.upgrade()) else {
            return;
        };
        let mut entries = inner.entries.lock();
        let unused = entry.refs.load(Ordering::SeqCst) == 0;
        if unused && entries.get(&key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
            let gone = entries.remove(&key);
            drop(entries);
            drop(gone);
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => drop(handle.spawn(async move {
            tokio::time::sleep(GRACE).await;
            forget();
        })),
        Err(_) => forget(),
    }
}

impl Services {
    /// A lease on the instance of service `key`: the running one, or one `start` starts (once, however many
    /// ask at the same time). A start that fails is forgotten, so a later dependent tries again.
    pub(crate) async fn acquire<F>(&self, key: &Digest, start: impl FnOnce() -> F) -> Result<ServiceLease, ServiceError>
    where
        F: std::future::Future<Output = Result<Running, ServiceError>>,
    {
        // An instance whose process has ended since it started is forgotten: this dependent starts a new one.
        {
            let mut entries = self.inner.entries.lock();
            let ended = entries
                .get(key)
                .and_then(|e| e.started.get())
                .is_some_and(|r| r.as_ref().is_ok_and(|r| r.signals.is_some() && r.exit_code().is_some()));
            if ended {
                let gone = entries.remove(key);
                drop(entries);
                drop(gone);
            }
        }
        let entry = {
            let mut entries = self.inner.entries.lock();
            let entry = entries.entry(key.clone()).or_insert_with(|| {
                Arc::new(Entry {
                    refs: AtomicUsize::new(0),
                    started: tokio::sync::OnceCell::new(),
                })
            });
            entry.refs.fetch_add(1, Ordering::SeqCst);
            entry.clone()
        };
        // From here the count is released on every path, a cancelled start included.
        let lease = PendingLease {
            key: key.clone(),
            entry: entry.clone(),
            services: Arc::downgrade(&self.inner),
            armed: true,
        };
        let inner = self.inner.clone();
        let outcome = entry
            .started
            .get_or_init(|| async move {
                inner.starts.fetch_add(1, Ordering::Relaxed);
                start().await.map(Arc::new)
            })
            .await
            .clone();
        match outcome {
            Ok(running) => Ok(lease.into_lease(running)),
            Err(e) => {
                // The failed instance is forgotten at once: the next dependent starts afresh.
                let mut entries = self.inner.entries.lock();
                if entries.get(key).is_some_and(|e| Arc::ptr_eq(e, &entry)) {
                    entries.remove(key);
                }
                Err(e)
            }
        }
    }

    /// The running instance of `key`, if there is one (started, not failed).
    #[cfg(test)]
    pub(crate) fn get(&self, key: &Digest) -> Option<Arc<Running>> {
        let entry = self.inner.entries.lock().get(key).cloned()?;
        entry.started.get().and_then(|r| r.as_ref().ok()).cloned()
    }

    /// Keeps `lease` until [`stop`](Self::stop) or the end of the session (`Service.start`).
    pub(crate) fn keep(&self, lease: ServiceLease) {
        let key = lease.key.clone();
        // A second `start` keeps one lease: the one before is dropped after the new one is in.
        let before = self.inner.kept.lock().insert(key, lease);
        drop(before);
    }

    /// Stops the instance of `key`, whoever uses it, and forgets it (the next dependent starts a new one).
    /// Returns whether one was running.
    pub(crate) async fn stop(&self, key: &Digest, kill: bool) -> bool {
        let kept = self.inner.kept.lock().remove(key);
        let entry = self.inner.entries.lock().remove(key);
        let running = entry.and_then(|e| e.started.get().and_then(|r| r.as_ref().ok()).cloned());
        drop(kept);
        match running {
            Some(r) => {
                r.stop(kill).await;
                true
            }
            None => false,
        }
    }

    /// Stops every instance (the engine is stopping): each is killed when the last user lets go of it.
    pub(crate) fn stop_all(&self) {
        let kept = std::mem::take(&mut *self.inner.kept.lock());
        let entries = std::mem::take(&mut *self.inner.entries.lock());
        for entry in entries.values() {
            if let Some(Ok(r)) = entry.started.get()
                && let Some(signals) = &r.signals
            {
                let _ = signals.send(Some("KILL"));
            }
        }
        drop((kept, entries));
    }

    /// How many instances were started (tests count them).
    #[cfg(test)]
    pub(crate) fn starts(&self) -> usize {
        self.inner.starts.load(Ordering::Relaxed)
    }

    /// How many instances exist now (starting or running).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.entries.lock().len()
    }

    /// Whether no instance exists now.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A lease counted before its instance has started: released when dropped before it becomes one (the start
/// was cancelled), as a lease is.
struct PendingLease {
    key: Digest,
    entry: Arc<Entry>,
    services: Weak<Inner>,
    armed: bool,
}

impl PendingLease {
    fn into_lease(mut self, running: Arc<Running>) -> ServiceLease {
        self.armed = false;
        ServiceLease {
            key: self.key.clone(),
            entry: self.entry.clone(),
            services: self.services.clone(),
            running,
        }
    }
}

impl Drop for PendingLease {
    fn drop(&mut self) {
        if self.armed {
            release(&self.key, &self.entry, &self.services);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The instance registry with forwarder-like instances: no runtime, no root.

    use super::*;

    fn idle() -> Running {
        Running::task(Reach::Host, vec![1], tokio::spawn(std::future::pending()), None)
    }

    #[tokio::test]
    async fn concurrent_dependents_share_one_start_and_the_last_one_out_stops_it() {
        let services = Services::default();
        let key = Digest::of(b"svc");
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(idle())
        };
        let (a, b) = tokio::join!(services.acquire(&key, slow), services.acquire(&key, slow));
        let (a, b) = (a.expect("a"), b.expect("b"));
        assert_eq!(services.starts(), 1, "one instance for both");
        assert!(Arc::ptr_eq(a.running(), b.running()));
        drop(a);
        tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
        assert_eq!(services.len(), 1, "still used by b");
        drop(b);
        assert_eq!(services.len(), 1, "kept for the grace period");
        tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
        assert!(services.is_empty(), "stopped after the last dependent");
        let _c = services.acquire(&key, || async { Ok(idle()) }).await.expect("c");
        assert_eq!(services.starts(), 2, "a new instance after the old one stopped");
    }

    #[tokio::test]
    async fn a_failed_start_is_seen_by_every_waiter_and_forgotten() {
        let services = Services::default();
        let key = Digest::of(b"svc");
        let failing = || async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(ServiceError::ExitedEarly {
                exit_code: 3,
                logs: vec!["boom".into()],
            })
        };
        let (a, b) = tokio::join!(services.acquire(&key, failing), services.acquire(&key, failing));
        let (a, b) = (a.expect_err("a"), b.expect_err("b"));
        assert_eq!(a, b);
        assert_eq!(services.starts(), 1);
        assert_eq!(
            a.to_string(),
            "exited with code 3 before it was ready; its last output:\nboom"
        );
        assert!(services.is_empty());
        services
            .acquire(&key, || async { Ok(idle()) })
            .await
            .expect("started afresh");
        assert_eq!(services.starts(), 2);
    }

    #[tokio::test]
    async fn stop_forgets_a_kept_instance_and_stop_all_forgets_every_one() {
        let services = Services::default();
        let (one, two) = (Digest::of(b"one"), Digest::of(b"two"));
        let lease = services.acquire(&one, || async { Ok(idle()) }).await.expect("one");
        services.keep(lease);
        assert!(services.get(&one).is_some());
        assert!(services.stop(&one, true).await);
        assert!(services.get(&one).is_none());
        assert!(!services.stop(&one, true).await, "nothing left to stop");
        let lease = services.acquire(&two, || async { Ok(idle()) }).await.expect("two");
        services.keep(lease);
        services.stop_all();
        assert!(services.is_empty());
    }

    #[tokio::test]
    async fn a_forwarder_with_a_list_of_peers_serves_only_them() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("upstream");
        let target = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut c, _)) = upstream.accept().await {
                let _ = c.write_all(b"hello").await;
            }
        });
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("front");
        let port = front.local_addr().expect("addr").port();
        let allowed = Allowed::default();
        let task = spawn_forwarders(
            vec![(front, Upstream::Direct(target))],
            Box::new(()),
            Some(allowed.clone()),
        );
        let running = Running::task(Reach::Host, vec![port], task, Some(allowed));
        let read = || async move {
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await;
            got
        };
        assert_eq!(read().await, b"", "a peer nobody allowed is closed on");
        let guard = running.allow(Ipv4Addr::LOCALHOST).expect("a list of peers");
        assert_eq!(read().await, b"hello");
        drop(guard);
        assert_eq!(read().await, b"", "withdrawn with the guard");
        assert!(idle().allow(Ipv4Addr::LOCALHOST).is_none(), "a process keeps no list");
    }

    #[test]
    fn each_reach_says_where_a_port_goes() {
        let addr = |u: Option<Upstream>| match u {
            Some(Upstream::Direct(a)) => Some(a.to_string()),
            Some(Upstream::Inside(_, a)) => Some(format!("inside {a}")),
            None => None,
        };
        let bridge = Reach::Bridge(Ipv4Addr::new(10, 87, 0, 5));
        assert_eq!(addr(bridge.upstream(8080)).as_deref(), Some("10.87.0.5:8080"));
        let host = Reach::HostLoopback(vec![(80, 8080), (81, 9090)]);
        assert_eq!(addr(host.upstream(81)).as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(
            addr(host.upstream(8080)),
            None,
            "only the frontends a host service forwards"
        );
        assert_eq!(addr(Reach::Host.upstream(80)), None, "a tunnel is not for containers");
    }

    #[test]
    fn the_log_tail_keeps_the_last_lines() {
        let tail = LogTail::default();
        for n in 0..(LOG_TAIL + 5) {
            tail.push(&n.to_string());
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), LOG_TAIL);
        assert_eq!(lines.first().map(String::as_str), Some("5"));
    }
}
