//! Image fixtures: a real registry on loopback, a busybox image built from the host, and a scriptable fake
//! registry for what a real one will not do (corrupt blobs, token challenges).
//!
//! [`LocalRegistry::start`] runs Debian's `docker-registry` (the CNCF distribution registry) on a free
//! `127.0.0.1` port with its storage in a temporary directory, and kills it on drop. [`push_busybox`] builds a
//! one-layer busybox image from the host's `/bin/busybox` (Debian's `busybox-static`) with the engine's own
//! image builder and pushes it with the engine's registry client. No network beyond loopback is used.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dagger_engine::oci::{BuiltImage, Platform, Reference, RegistryClient, RegistryConfig, build_image};
use dagger_engine::store::Store;

use crate::http::{FakeServer, RawReply, RawRequest};

/// The registry binary, from the Debian package of the same name.
pub const REGISTRY_BIN: &str = "docker-registry";
/// Where busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The modification time of every fixture file, so fixture images have the same digest on every run.
pub const FIXTURE_MTIME: i64 = 1_700_000_000;
/// Bump when the recipe in [`busybox_layer`] changes (the packed layer is cached under this name).
pub const BUSYBOX_RECIPE: &str = "busybox-fixture-v1";

/// A `docker-registry` serving on `127.0.0.1:<port>` until dropped.
pub struct LocalRegistry {
    /// The port it listens on.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts a registry with empty storage on a free loopback port and waits until `/v2/` answers.
    pub fn start() -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        let port = crate::process::try_free_port().map_err(|e| format!("a free port on 127.0.0.1: {e}"))?;
        let addr = format!("127.0.0.1:{port}");
        let child = spawn_registry(dir.path(), &addr, false)?;
        let mut registry = LocalRegistry { port, child, dir };
        let log = registry.dir.path().join("registry.log");
        wait_ready(&addr, Some(&mut registry.child), &log)?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the registry part of references to it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A reference to `name` (`repo[:tag]`) in this registry.
    pub fn reference(&self, name: &str) -> Reference {
        match Reference::parse(&format!("{}/{name}", self.host())) {
            Ok(r) => r,
            Err(e) => panic!("fixture reference `{name}`: {e}"),
        }
    }

    /// The registry's working directory (config, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's configuration: filesystem storage under `dir/data`, listening on `addr`, deletes allowed.
pub fn registry_config(dir: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
         rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.join("data").display()
    )
}

/// Writes `dir/config.yml` and starts `docker-registry serve` on `addr`, logging to `dir/registry.log`. With
/// `detached`, the registry gets its own process group so it outlives the caller's terminal session.
pub fn spawn_registry(dir: &Path, addr: &str, detached: bool) -> Result<Child, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, registry_config(dir, addr)).map_err(|e| format!("{}: {e}", config.display()))?;
    let log_path = dir.join("registry.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(REGISTRY_BIN);
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if detached {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    }
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "`{REGISTRY_BIN}` is not installed: install the Debian package `docker-registry` \
                 (apt-get install docker-registry)"
            )
        } else {
            format!("starting `{REGISTRY_BIN}`: {e}")
        }
    })
}

/// Whether a registry answers `GET /v2/` with 200 on `addr`.
pub fn answers_v2(addr: &str) -> bool {
    let Ok(sock) = addr.parse() else { return false };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// Waits up to 20 s for `/v2/` on `addr`; fails early (with the log) if `child` exits.
pub fn wait_ready(addr: &str, mut child: Option<&mut Child>, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if answers_v2(addr) {
            return Ok(());
        }
        let log_text = || std::fs::read_to_string(log).unwrap_or_default();
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!(
                "`{REGISTRY_BIN}` exited ({status}) before serving:\n{}",
                log_text()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "`{REGISTRY_BIN}` did not answer on {addr} within 20 s:\n{}",
                log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------------------
// The busybox image
// ---------------------------------------------------------------------------------------------------------

/// Fills `dir` (which must not exist) with the busybox layer: `/bin/busybox`, a symlink per applet in `/bin`,
/// `/etc/passwd` and `/etc/group` with root, `/root`, and `/tmp`. Every time is [`FIXTURE_MTIME`].
pub fn busybox_layer(dir: &Path) -> Result<(), String> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| format!("{what}: {e}")
    };
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing: install the Debian package `busybox-static`"
        ));
    }
    let out = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| format!("{BUSYBOX} --list: {e}"))?;
    let applets = String::from_utf8_lossy(&out.stdout).into_owned();

    let bin = dir.join("bin");
    let etc = dir.join("etc");
    std::fs::create_dir_all(&bin).map_err(io(&bin))?;
    std::fs::create_dir_all(&etc).map_err(io(&etc))?;
    let busybox = bin.join("busybox");
    std::fs::copy(BUSYBOX, &busybox).map_err(io(&busybox))?;
    std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755)).map_err(io(&busybox))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        if applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(io(&link))?;
    }
    let passwd = etc.join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/bin/sh\n").map_err(io(&passwd))?;
    let group = etc.join("group");
    std::fs::write(&group, "root:x:0:\n").map_err(io(&group))?;
    for (name, mode) in [("tmp", 0o1777), ("root", 0o700)] {
        let d = dir.join(name);
        std::fs::create_dir(&d).map_err(io(&d))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).map_err(io(&d))?;
    }
    set_times(dir).map_err(io(dir))
}

// Every entry's mtime (symlinks included, not followed), children before their directory.
fn set_times(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for e in std::fs::read_dir(path)? {
            set_times(&e?.path())?;
        }
    }
    let t = rustix::fs::Timespec {
        tv_sec: FIXTURE_MTIME,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// The busybox image's configuration: `PATH` and `Cmd ["sh"]`.
pub fn busybox_config() -> Result<oci_spec::image::ImageConfiguration, String> {
    image_config(
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        "sh",
    )
}

/// An image configuration with an environment and a one-word default command.
pub fn image_config(env: Vec<String>, cmd: &str) -> Result<oci_spec::image::ImageConfiguration, String> {
    let config = oci_spec::image::ConfigBuilder::default()
        .env(env)
        .cmd(vec![cmd.to_owned()])
        .build()
        .map_err(|e| e.to_string())?;
    oci_spec::image::ImageConfigurationBuilder::default()
        .config(config)
        .build()
        .map_err(|e| e.to_string())
}

/// Builds the busybox image in `store` for `platform`. The layer directory lives in the store under a name
/// derived from the busybox binary, so rebuilding reuses the packed layer.
pub fn busybox_image(store: &Store, platform: &Platform) -> Result<BuiltImage, String> {
    let binary = std::fs::read(BUSYBOX).map_err(|e| format!("{BUSYBOX}: {e}"))?;
    let id = dagger_engine::ids::Digest::of(&binary);
    let layer = store.root().join("fixtures").join(format!("{BUSYBOX_RECIPE}-{id}"));
    if !layer.is_dir() {
        let tmp = store
            .root()
            .join("fixtures")
            .join(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        busybox_layer(&tmp)?;
        std::fs::rename(&tmp, &layer).map_err(|e| format!("{}: {e}", layer.display()))?;
    }
    build_image(store, &[layer], &busybox_config()?, platform).map_err(|e| e.to_string())
}

/// Builds the busybox image (linux/amd64 config) and pushes it as `name` (`repo[:tag]`) to the registry at
/// `host`. Returns the pinned reference, `host/repo@sha256:…`.
pub async fn push_busybox_to(host: &str, name: &str, store: &Store) -> Result<String, String> {
    let image = busybox_image(store, &Platform::default())?;
    let reference = Reference::parse(&format!("{host}/{name}")).map_err(|e| e.to_string())?;
    let client = RegistryClient::new(RegistryConfig::default()).map_err(|e| e.to_string())?;
    client.push(&image, &reference, None).await.map_err(|e| e.to_string())
}

/// Builds the busybox image and pushes it to `registry` as `name` (such as `busybox:latest`); returns the
/// pinned reference. Panics with the reason when that fails (a test cannot go on without it).
pub async fn push_busybox(registry: &LocalRegistry, name: &str) -> String {
    let store_dir = registry.dir().join("fixture-store");
    let store = match Store::open(&store_dir) {
        Ok(s) => s,
        Err(e) => panic!("fixture store: {e}"),
    };
    match push_busybox_to(&registry.host(), name, &store).await {
        Ok(pinned) => pinned,
        Err(e) => panic!("pushing the busybox fixture to {}: {e}", registry.host()),
    }
}

// ---------------------------------------------------------------------------------------------------------
// A scriptable fake registry
// ---------------------------------------------------------------------------------------------------------

/// A request the fake registry received.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path and query.
    pub target: String,
    /// Header names (lowercase) and values.
    pub headers: HashMap<String, String>,
}

/// What the fake registry answers: status, headers, body.
pub type FakeReply = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 server on `127.0.0.1:0` (see [`crate::http`]) that answers with a handler and can set any
/// header (such as `WWW-Authenticate`), and serves binary bodies. Request bodies are read and dropped.
pub struct FakeRegistry {
    /// The port it listens on.
    pub port: u16,
    requests: Arc<Mutex<Vec<FakeRequest>>>,
    _server: FakeServer,
}

impl FakeRegistry {
    /// Starts the server; `handler` also gets the server's own port (for token realms that point back).
    pub async fn start(handler: impl Fn(u16, &FakeRequest) -> FakeReply + Send + Sync + 'static) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let server = FakeServer::start(move |port, raw: RawRequest| {
            let req = FakeRequest {
                method: raw.method,
                target: raw.target,
                headers: raw.headers,
            };
            if let Ok(mut r) = recorded.lock() {
                r.push(req.clone());
            }
            let (status, headers, body) = handler(port, &req);
            RawReply { status, headers, body }
        })
        .await;
        FakeRegistry {
            port: server.port,
            requests,
            _server: server,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<FakeRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The cache directory fixtures use outside tests: the one the engine uses.
pub fn cache_dir() -> PathBuf {
    // The engine's own choice (`DAGGER_RS_CACHE_DIR`, the configuration file's `cacheDir`, XDG, `~/.cache`), so
    // the registry storage sits beside the cache the engine uses.
    dagger_engine::Config::load()
        .map(|c| c.cache_dir)
        .unwrap_or_else(|_| dagger_engine::store::Store::default_dir())
}
