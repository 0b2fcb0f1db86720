//! Services on the embedded engine: containers run as services on the session's bridge, reached by alias
//! from execs that bind them, shared by concurrent dependents, health-checked, stopped, cached, tunnelled to
//! the host and back, and gone when the engine stops.
//!
//! The base image is built from the host's `busybox-static` (`httpd`, `wget`, `nc`), so no registry is
//! needed. Services need the bridge, so these tests need root (as the other container tests do).

use std::sync::Arc;
use std::time::Duration;

use dagger::prelude::*;
use dagger::{ContainerAsServiceOpts, ContainerWithExposedPortOpts, PortForward, ServiceEndpointOpts, ServiceStopOpts};
use dagger_engine::{Config, EventKind, Session};

/// Counts events.
#[derive(Default)]
struct Counter(std::sync::atomic::AtomicUsize);

impl Counter {
    fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Env {
    session: Session,
    dag: Query,
    /// Service instances started (their `Started` events).
    starts: Arc<Counter>,
    /// Service logs and outcomes, as progress events show them.
    lines: Arc<std::sync::Mutex<Vec<String>>>,
    cache: std::path::PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

async fn start_on(cache: &std::path::Path) -> (Session, Query, Arc<Counter>, Arc<std::sync::Mutex<Vec<String>>>) {
    let (session, dag) = testkit::start_engine(Config::for_dir(cache)).await;
    let starts = Arc::new(Counter::default());
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, l) = (starts.clone(), lines.clone());
    session.engine.listen(move |e| {
        if e.op != "Service" {
            return;
        }
        match &e.kind {
            EventKind::Started => s.add(),
            EventKind::Log(line) | EventKind::Failed(line) => l.lock().expect("lines").push(line.clone()),
            _ => {}
        }
    });
    (session, dag, starts, lines)
}

async fn start() -> Env {
    let cache = tempfile::tempdir().expect("cache dir");
    let (session, dag, starts, lines) = start_on(cache.path()).await;
    Env {
        session,
        dag,
        starts,
        lines,
        cache: cache.path().to_owned(),
        _dirs: vec![cache],
    }
}

/// A busybox root filesystem on the host: `/bin/busybox`, one link per applet, `/etc/passwd` and `/tmp`.
fn busybox_rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("rootfs dir");
    let root = dir.path();
    for d in ["bin", "etc", "tmp", "root", "srv"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("/bin/busybox is missing: install the Debian package busybox-static");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
    std::fs::write(root.join("srv/index.html"), "hello from the service\n").expect("index");
    dir
}

impl Env {
    /// Stops the session as a program does before it exits (its services with it).
    async fn finish(self) {
        self.session.shutdown(Duration::from_secs(5)).await;
    }

    fn busybox(&mut self) -> Container {
        let root = busybox_rootfs();
        let path = root.path().to_string_lossy().into_owned();
        self._dirs.push(root);
        self.dag.container().with_rootfs(self.dag.host().directory(path))
    }

    /// An HTTP server on port 8080 serving `/srv` (`index.html` says hello).
    fn web(&mut self) -> Service {
        self.busybox()
            .with_exposed_port_opts(8080, ContainerWithExposedPortOpts::default().description("web"))
            .as_service_opts(ContainerAsServiceOpts::default().args(["httpd", "-f", "-p", "8080", "-h", "/srv"]))
    }
}

/// Fetches `url` in a client container bound to `svc` as `alias`; `tag` makes the exec a call of its own.
fn fetch(client: Container, alias: &str, svc: &Service, url: &str, tag: &str) -> Container {
    client
        .with_service_binding(alias, svc.clone())
        .with_exec(["sh", "-c", &format!("wget -q -O- {url} && : {tag}")])
}

#[tokio::test]
async fn a_client_reaches_a_service_by_its_alias_and_its_hostname() {
    let mut env = start().await;
    let svc = env.web();
    let host = svc.hostname().await.expect("hostname");
    assert_eq!(host.len(), 13, "{host}");
    assert!(
        host.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
        "{host}"
    );
    assert_eq!(svc.endpoint().await.expect("endpoint"), format!("{host}:8080"));
    assert_eq!(
        svc.endpoint_opts(ServiceEndpointOpts::default().scheme("http"))
            .await
            .expect("endpoint"),
        format!("http://{host}:8080")
    );
    let ports = svc.ports().await.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port().await.expect("port"), 8080);
    assert_eq!(
        ports[0].description().await.expect("description").as_deref(),
        Some("web")
    );
    assert_eq!(env.starts.get(), 0, "answering about a service does not run it");
    // Its ID loads it back, under the same hostname.
    let id = svc.id().await.expect("id");
    let loaded = env.dag.load_service_from_id(id.clone());
    assert_eq!(loaded.hostname().await.expect("loaded"), host);
    assert_eq!(loaded.id().await.expect("id again"), id);

    let client = env.busybox();
    let by_alias = fetch(client.clone(), "www", &svc, "http://www:8080/index.html", "alias");
    assert_eq!(by_alias.stdout().await.expect("by alias"), "hello from the service\n");
    let by_name = fetch(client, "www", &svc, &format!("http://{host}:8080/index.html"), "name");
    assert_eq!(by_name.stdout().await.expect("by hostname"), "hello from the service\n");
    let lines = env.lines.lock().expect("lines").clone();
    assert!(
        lines.iter().any(|l| l.contains(&format!("{host} is ready at 10.87."))),
        "{lines:?}"
    );

    // The service's own host name is the one its clients know it by.
    let own = env
        .busybox()
        .with_exposed_port(8080)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "hostname > /srv/name && exec httpd -f -p 8080 -h /srv",
        ]));
    let own_name = own.hostname().await.expect("hostname");
    let c = fetch(env.busybox(), "me", &own, "http://me:8080/name", "own");
    assert_eq!(c.stdout().await.expect("its name"), format!("{own_name}\n"));

    // `withHostname` names the service: the client reaches it under that name as well.
    let named = svc.with_hostname("web-server");
    assert_eq!(named.hostname().await.expect("hostname"), "web-server");
    let c = fetch(
        env.busybox(),
        "other",
        &named,
        "http://web-server:8080/index.html",
        "custom",
    );
    assert_eq!(c.stdout().await.expect("custom name"), "hello from the service\n");
    env.finish().await;
}

#[tokio::test]
async fn concurrent_dependents_share_one_instance() {
    let mut env = start().await;
    let svc = env.web();
    let client = env.busybox();
    let a = fetch(client.clone(), "www", &svc, "http://www:8080/index.html", "a");
    let b = fetch(client, "web", &svc, "http://web:8080/index.html", "b");
    let (a, b) = tokio::join!(a.stdout(), b.stdout());
    assert_eq!(a.expect("a"), "hello from the service\n");
    assert_eq!(b.expect("b"), "hello from the service\n");
    assert_eq!(env.starts.get(), 1, "one instance for both dependents");
    env.finish().await;
}

#[tokio::test]
async fn a_service_reaches_the_services_it_binds() {
    let mut env = start().await;
    let web = env.web();
    // A second service that copies the first one's page at start, then serves it.
    let mirror = env
        .busybox()
        .with_service_binding("origin", web)
        .with_exposed_port(8081)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "wget -q -O /srv/copy.html http://origin:8080/index.html && exec httpd -f -p 8081 -h /srv",
        ]));
    let c = fetch(
        env.busybox(),
        "mirror",
        &mirror,
        "http://mirror:8081/copy.html",
        "chain",
    );
    assert_eq!(c.stdout().await.expect("through the chain"), "hello from the service\n");
    assert_eq!(env.starts.get(), 2, "the mirror and the service it binds");
    env.finish().await;
}

#[tokio::test]
async fn a_service_that_exits_before_it_is_ready_fails_its_dependent_with_its_output() {
    let mut env = start().await;
    let svc = env
        .busybox()
        .with_exposed_port(5432)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "echo starting up; echo config is missing >&2; exit 3",
        ]));
    let err = env
        .busybox()
        .with_service_binding("db", svc)
        .with_exec(["echo", "never runs"])
        .stdout()
        .await
        .expect_err("the service failed");
    let message = err.to_string();
    assert!(message.contains("exited with code 3 before it was ready"), "{message}");
    assert!(
        message.contains("config is missing") && message.contains("starting up"),
        "{message}"
    );
    assert!(message.contains("(bound as `db`)"), "{message}");
    env.finish().await;
}

#[tokio::test]
async fn a_service_without_a_command_is_refused_by_name() {
    let mut env = start().await;
    let err = env.busybox().as_service().hostname().await.expect_err("no command");
    assert!(err.to_string().contains("no service command has been set"), "{err}");
    env.finish().await;
}

/// The runtime containers (`drs-…` state folders) the engine on `cache` has now.
fn containers(cache: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(cache.join("runtime"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("drs-"))
                .collect()
        })
        .unwrap_or_default()
}

/// The network namespaces of this process.
fn namespaces() -> Vec<String> {
    let prefix = format!("drs-{}-", std::process::id());
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (up to 30 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn start_keeps_a_service_until_stop() {
    let mut env = start().await;
    let svc = env.web();
    svc.start().await.expect("start");
    assert_eq!(env.starts.get(), 1);
    assert_eq!(containers(&env.cache).len(), 1, "the service runs");
    let c = fetch(env.busybox(), "www", &svc, "http://www:8080/index.html", "started");
    assert_eq!(c.stdout().await.expect("fetch"), "hello from the service\n");
    assert_eq!(env.starts.get(), 1, "the started instance served the exec");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        containers(&env.cache).len(),
        1,
        "kept after its dependent, until stopped"
    );
    svc.stop_opts(ServiceStopOpts::default().kill(true))
        .await
        .expect("stop");
    eventually("the service's container is gone", || containers(&env.cache).is_empty()).await;
    let lines = env.lines.lock().expect("lines").clone();
    assert!(lines.iter().any(|l| l.starts_with("exited with code")), "{lines:?}");
    // Stopped, it starts again for the next dependent.
    let c = fetch(env.busybox(), "www", &svc, "http://www:8080/index.html", "again");
    assert_eq!(c.stdout().await.expect("fetch again"), "hello from the service\n");
    assert_eq!(env.starts.get(), 2);
    env.finish().await;
}

#[tokio::test]
async fn a_graceful_stop_lets_the_service_end_itself() {
    let mut env = start().await;
    let svc = env
        .busybox()
        .with_exposed_port(8080)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; httpd -f -p 8080 -h /srv & wait",
        ]));
    svc.start().await.expect("start");
    let begun = std::time::Instant::now();
    svc.stop().await.expect("stop");
    assert!(
        begun.elapsed() < Duration::from_secs(9),
        "ended on SIGTERM, not killed after the timeout"
    );
    let lines = env.lines.lock().expect("lines").clone();
    assert!(lines.iter().any(|l| l == "got TERM"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "exited with code 0"), "{lines:?}");
    env.finish().await;
}

#[tokio::test]
async fn an_exec_that_used_a_service_is_cached_by_its_inputs() {
    let cache = tempfile::tempdir().expect("cache");
    let rootfs = busybox_rootfs();
    let run = |dag: Query| {
        let base = dag
            .container()
            .with_rootfs(dag.host().directory(rootfs.path().to_string_lossy().into_owned()));
        let svc = base
            .clone()
            .with_exposed_port(8080)
            .as_service_opts(ContainerAsServiceOpts::default().args(["httpd", "-f", "-p", "8080", "-h", "/srv"]));
        (fetch(base, "www", &svc, "http://www:8080/index.html", "cached"), svc)
    };
    let (session, dag, starts, _) = start_on(cache.path()).await;
    let (client, svc) = run(dag.clone());
    assert_eq!(client.stdout().await.expect("first"), "hello from the service\n");
    assert_eq!(starts.get(), 1);
    let first_name = svc.hostname().await.expect("hostname");
    session.shutdown(Duration::from_secs(5)).await;

    // Another session on the same cache: the same exec (same inputs, the same service ID) is a cache hit,
    // and the service is not started at all; its hostname is the same.
    let (session, dag, starts, _) = start_on(cache.path()).await;
    let computed = session.engine.computed.load(std::sync::atomic::Ordering::Relaxed);
    let (client, svc) = run(dag);
    assert_eq!(client.stdout().await.expect("again"), "hello from the service\n");
    assert_eq!(starts.get(), 0, "a cache hit starts no service");
    let after = session.engine.computed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        after - computed <= 2,
        "only the host directory and nothing else is computed: {}",
        after - computed
    );
    assert_eq!(
        svc.hostname().await.expect("hostname"),
        first_name,
        "derived from the ID, in every session"
    );
    session.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn nothing_is_left_when_the_engine_stops() {
    let mut env = start().await;
    let marker = format!("drs-test-service-{}", std::process::id());
    let svc = env
        .busybox()
        .with_exposed_port(8080)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            &format!("httpd -f -p 8080 -h /srv; : {marker}"),
        ]));
    svc.start().await.expect("start");
    assert_eq!(containers(&env.cache).len(), 1);
    assert!(!namespaces().is_empty());
    assert!(
        !testkit::process::processes_with(&marker).is_empty(),
        "the service runs"
    );
    let cache = env.cache.clone();
    let Env { session, _dirs, .. } = env;
    session.shutdown(Duration::from_secs(5)).await;
    // At once, as for a process that exits right after: nothing is left to a task in the background.
    assert!(containers(&cache).is_empty(), "{:?}", containers(&cache));
    assert!(
        testkit::process::processes_with(&marker).is_empty(),
        "the service's process is killed"
    );
    eventually("no network namespace is left", || namespaces().is_empty()).await;
    drop(_dirs);
}

/// An engine running a started httpd service whose command line holds `marker` (to find its process).
async fn start_marked_service(marker: &str) -> Env {
    let mut env = start().await;
    let svc = env
        .busybox()
        .with_exposed_port(8080)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            &format!("httpd -f -p 8080 -h /srv; : {marker}"),
        ]));
    svc.start().await.expect("start");
    assert!(!testkit::process::processes_with(marker).is_empty(), "the service runs");
    env
}

#[test]
fn a_session_dropped_without_a_shutdown_takes_its_services_with_it() {
    let marker = format!("drs-test-dropped-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = runtime.block_on(async {
        let env = start_marked_service(&marker).await;
        // The program ends here without stopping the session: its runtime goes, and the engine with it.
        let Env { session, _dirs, .. } = env;
        drop(session);
        _dirs
    });
    drop(runtime);
    assert!(
        testkit::process::processes_with(&marker).is_empty(),
        "the service's process outlived its engine"
    );
    drop(cache);
}

/// The usual shape of a test or a program: the session is dropped, and its cache directory right after, while
/// the engine still lives in the runtime's tasks. Dropping the session kills what it runs at once, so nothing
/// is left to a runtime that could no longer find its containers' state.
#[test]
fn a_dropped_session_kills_its_services_before_its_cache_directory_goes() {
    let marker = format!("drs-test-dropped-cache-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let env = start_marked_service(&marker).await;
        let Env { session, _dirs, .. } = env;
        drop(session);
        drop(_dirs);
        assert!(
            testkit::process::processes_with(&marker).is_empty(),
            "the service's process outlived its session"
        );
    });
    drop(runtime);
    assert!(testkit::process::processes_with(&marker).is_empty());
}

#[tokio::test]
async fn the_host_reaches_a_service_through_a_tunnel_on_loopback() {
    let mut env = start().await;
    let svc = env.web();
    let tunnel = env.dag.host().tunnel(svc.clone());
    let endpoint = tunnel.endpoint().await.expect("endpoint");
    assert!(endpoint.starts_with("127.0.0.1:"), "{endpoint}");
    let body = reqwest::get(format!("http://{endpoint}/index.html"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "hello from the service\n");

    // `up` forwards to the port asked for, until the service stops.
    let port = testkit::process::free_port();
    let up_svc = svc.clone();
    let up = tokio::spawn(async move {
        up_svc
            .up_opts(dagger::ServiceUpOpts::default().ports([PortForward {
                frontend: Some(i64::from(port)),
                backend: 8080,
                protocol: None,
            }]))
            .await
    });
    let url = format!("http://127.0.0.1:{port}/index.html");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Ok(r) = reqwest::get(&url).await {
            break r.text().await.expect("body");
        }
        assert!(std::time::Instant::now() < deadline, "the tunnel of `up` did not open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "hello from the service\n");
    svc.stop_opts(ServiceStopOpts::default().kill(true))
        .await
        .expect("stop");
    let ended = tokio::time::timeout(Duration::from_secs(30), up).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "`up` returns when the service stops: {ended:?}"
    );
    // Nothing to forward is said at once, rather than waiting on nothing.
    let portless = env
        .busybox()
        .as_service_opts(ContainerAsServiceOpts::default().args(["sleep", "60"]));
    let err = portless.up().await.expect_err("no ports");
    assert!(err.to_string().contains("exposes no ports"), "{err}");
    env.finish().await;
}

#[tokio::test]
async fn containers_reach_a_port_of_the_host_through_a_host_service() {
    let mut env = start().await;
    let server = testkit::http::FakeServer::start(|_, req| testkit::http::RawReply {
        status: 200,
        headers: vec![],
        body: format!("host says hi to {}", req.target).into_bytes(),
    })
    .await;
    let svc = env.dag.host().service([PortForward {
        frontend: Some(80),
        backend: i64::from(server.port),
        protocol: None,
    }]);
    let c = fetch(env.busybox(), "host", &svc, "http://host/x", "host");
    assert_eq!(c.stdout().await.expect("from the host"), "host says hi to /x");

    // A container that does not bind the host service cannot reach it, even at its address.
    svc.start().await.expect("start");
    let lines = env.lines.lock().expect("lines").clone();
    let address = lines
        .iter()
        .find_map(|l| l.split(" is ready at ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no address in {lines:?}"))
        .to_owned();
    let stranger = env
        .busybox()
        .with_exec_opts(
            [
                "sh",
                "-c",
                &format!("wget -q -T 5 -O- http://{address}/x; echo exit=$?"),
            ],
            dagger::ContainerWithExecOpts::default().expect(dagger::ReturnType::Any),
        )
        .stdout()
        .await
        .expect("stranger");
    assert!(!stranger.contains("host says hi"), "{stranger}");
    // The connection is closed at once: wget fails (busybox's even crashes on it).
    assert!(
        stranger.contains("exit=") && !stranger.ends_with("exit=0\n"),
        "{stranger}"
    );
    env.finish().await;
}

#[tokio::test]
async fn a_service_that_ended_is_started_again_for_the_next_dependent() {
    let mut env = start().await;
    // `httpd` without `-f` goes to the background, and the service ends when its first process does: the
    // first instance ends after three seconds, the next one (which finds the mark the first left in a cache
    // volume) stays.
    let state = env.dag.cache_volume("service-state");
    let svc = env
        .busybox()
        .with_mounted_cache("/state", state)
        .with_exposed_port(8080)
        .as_service_opts(ContainerAsServiceOpts::default().args([
            "sh",
            "-c",
            "httpd -p 8080 -h /srv; if [ -e /state/ran ]; then exec sleep 600; fi; touch /state/ran; sleep 3",
        ]));
    svc.start().await.expect("start");
    let lines = env.lines.clone();
    eventually("the service ends", || {
        lines.lock().expect("lines").iter().any(|l| l == "exited with code 0")
    })
    .await;
    let c = fetch(env.busybox(), "www", &svc, "http://www:8080/index.html", "after");
    assert_eq!(c.stdout().await.expect("fetch"), "hello from the service\n");
    assert_eq!(env.starts.get(), 2, "a new instance");
    env.finish().await;
}
