//! The engine of one session, the context every operation receives: its configuration, the [`Solver`] of its
//! calls, session secrets, and the worker's resources (runtime, registry client, network, cache volumes).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::model::ids::{Call, Digest};
use crate::ops::error::OpError;
use crate::ops::value::Evaluated;
use crate::solver::Solver;
use crate::solver::events::{Event, EventKind};
use crate::store::Store;
use crate::worker::cache_volume::CacheVolumes;

/// How the engine is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cache directory (see [`Store::default_dir`]).
    pub cache_dir: PathBuf,
    /// The directory host paths resolve against.
    pub workdir: PathBuf,
    /// The OCI runtime (`runc`, `crun` or a path); `None` reads `DAGGER_RS_RUNTIME`, then uses `runc`.
    pub runtime: Option<String>,
    /// How long one exec may run before it is killed; `None` reads `DAGGER_RS_EXEC_TIMEOUT` (seconds), and
    /// without it there is no limit.
    pub exec_timeout: Option<std::time::Duration>,
    /// How container filesystems are assembled; `None` reads `DAGGER_RS_SNAPSHOTTER`, then uses overlayfs
    /// where it works and copies elsewhere.
    pub snapshotter: Option<crate::worker::snapshot::SnapshotterKind>,
    /// Registry mirrors, plain-HTTP registries and timeouts; `None` reads `DAGGER_RS_REGISTRY_MIRRORS`,
    /// `DAGGER_RS_INSECURE_REGISTRIES` and `DAGGER_RS_REGISTRY_TIMEOUT`.
    pub registries: Option<crate::worker::oci::registry::RegistryConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_dir: Store::default_dir(),
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            runtime: None,
            exec_timeout: None,
            snapshotter: None,
            registries: None,
        }
    }
}

/// The engine configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("engine configuration {}: {reason}", path.display())]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The engine configuration file: every field optional; environment variables override it.
///
/// ```json
/// {
///   "cacheDir": "/var/cache/dagger-rs",
///   "runtime": "crun",
///   "execTimeoutSeconds": 3600,
///   "snapshotter": "overlay",
///   "registryMirrors": { "docker.io": ["http://127.0.0.1:5000"] },
///   "insecureRegistries": ["registry.internal:5000"],
///   "registryTimeout": "connect=10,request=60,idle=60"
/// }
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    cache_dir: Option<PathBuf>,
    runtime: Option<String>,
    exec_timeout_seconds: Option<u64>,
    snapshotter: Option<String>,
    #[serde(default)]
    registry_mirrors: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    insecure_registries: Vec<String>,
    registry_timeout: Option<String>,
}

impl Config {
    /// The defaults with `dir` as both the cache directory and the working directory: an engine that keeps
    /// everything it writes in one directory of the caller's (a temporary one in tests). Set fields after it
    /// for anything else, such as `Config { exec_timeout: Some(d), ..Config::for_dir(dir) }`.
    pub fn for_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Self {
            cache_dir: dir.clone(),
            workdir: dir,
            ..Self::default()
        }
    }

    /// Where the configuration file is looked for: `$DAGGER_RS_CONFIG`, else
    /// `$XDG_CONFIG_HOME/dagger-rs/engine.json`, else `~/.config/dagger-rs/engine.json`.
    pub fn file_path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("DAGGER_RS_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("dagger-rs").join("engine.json"))
    }

    /// The defaults, then the configuration file (when there is one), then environment variables
    /// (`DAGGER_RS_CACHE_DIR`, `DAGGER_RS_RUNTIME`, `DAGGER_RS_EXEC_TIMEOUT`, `DAGGER_RS_SNAPSHOTTER`,
    /// `DAGGER_RS_REGISTRY_MIRRORS`, `DAGGER_RS_INSECURE_REGISTRIES`, `DAGGER_RS_REGISTRY_TIMEOUT`), each
    /// overriding the one before.
    pub fn load() -> Result<Self, ConfigError> {
        let mut config = Config::default();
        let Some(path) = Self::file_path() else {
            return Ok(config);
        };
        let explicit = std::env::var_os("DAGGER_RS_CONFIG").is_some_and(|p| !p.is_empty());
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(config),
            Err(e) => {
                return Err(ConfigError {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let bad = |reason: String| ConfigError {
            path: path.clone(),
            reason,
        };
        let file: ConfigFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if let Some(d) = file.cache_dir
            && !env_set("DAGGER_RS_CACHE_DIR")
        {
            config.cache_dir = d;
        }
        config.runtime = file.runtime;
        config.exec_timeout = file.exec_timeout_seconds.map(std::time::Duration::from_secs);
        config.snapshotter = match file.snapshotter.as_deref() {
            None => None,
            Some("overlay") => Some(crate::worker::snapshot::SnapshotterKind::Overlay),
            Some("copy") => Some(crate::worker::snapshot::SnapshotterKind::Copy),
            Some(other) => return Err(bad(format!("snapshotter `{other}` is not `overlay` or `copy`"))),
        };
        // Environment variables win over the file: a field left empty is read from its variable when used.
        if env_set("DAGGER_RS_RUNTIME") {
            config.runtime = None;
        }
        if env_set("DAGGER_RS_EXEC_TIMEOUT") {
            config.exec_timeout = None;
        }
        if env_set("DAGGER_RS_SNAPSHOTTER") {
            config.snapshotter = None;
        }
        let mut registries =
            crate::worker::oci::registry::RegistryConfig::from_env().map_err(|e| bad(e.to_string()))?;
        if !env_set("DAGGER_RS_REGISTRY_MIRRORS") {
            registries.mirrors = file.registry_mirrors;
        }
        if !env_set("DAGGER_RS_INSECURE_REGISTRIES") {
            registries.insecure = file.insecure_registries.into_iter().collect();
        }
        if let Some(t) = file
            .registry_timeout
            .filter(|_| !env_set(crate::worker::oci::registry::TIMEOUT_ENV))
        {
            registries.timeouts = crate::worker::oci::registry::RegistryTimeouts::parse(&t)
                .map_err(|e| bad(format!("registryTimeout: {e}")))?;
        }
        config.registries = Some(registries);
        Ok(config)
    }
}

/// One session's engine.
pub struct Engine {
    /// Setup.
    pub config: Config,
    /// The on-disk store.
    pub store: Store,
    /// Calls, results and evaluations.
    pub(crate) solver: Arc<Solver<Evaluated, OpError>>,
    secrets: Mutex<HashMap<Digest, String>>,
    runtime: std::sync::OnceLock<Result<crate::worker::runtime::Runtime, String>>,
    registry: std::sync::OnceLock<Result<crate::worker::oci::registry::RegistryClient, String>>,
    /// The snapshotter chosen for this engine's cache directory on first use, and why overlayfs was not
    /// usable when it fell back to copies.
    snapshot: std::sync::OnceLock<(crate::worker::snapshot::SnapshotterKind, Option<String>)>,
    /// Whether the copying-snapshotter warning was reported.
    pub warned_snapshot: std::sync::atomic::AtomicBool,
    /// Container networking.
    pub network: Arc<crate::worker::network::Network>,
    /// The locks and use counts of cache volumes.
    pub(crate) volumes: CacheVolumes,
    /// The session's running services: one instance per service ID.
    pub(crate) services: crate::worker::service::Services,
    /// How many operations were computed (not served from a cache), for tests and benchmarks.
    pub computed: std::sync::atomic::AtomicUsize,
    /// How many GraphQL requests were answered (authorized and well-formed), for tests and benchmarks.
    pub requests: std::sync::atomic::AtomicUsize,
    /// What the engine collected at start-up from engines that stopped uncleanly (see
    /// [`crate::worker::cleanup`]); reported once, as an event, by [`Engine::subscribe_with_start_report`].
    pub collected: crate::worker::collected::Collected,
    collected_reported: std::sync::atomic::AtomicBool,
    /// Notes on how this engine runs, reported once with the start-up collection: rootless without
    /// subordinate IDs (containers get a single user ID).
    pub notes: Vec<String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over the cache directory of `config`.
    pub fn new(config: Config) -> Result<Arc<Self>, crate::store::StoreError> {
        let store = Store::open(&config.cache_dir)?;
        let collected = crate::worker::cleanup::start(&store);
        let network = Arc::new(crate::worker::network::Network::for_cache(store.root()));
        let volumes = CacheVolumes::shared_through(store.root().join("cache-volumes"));
        Ok(Arc::new(Self {
            config,
            solver: Arc::new(Solver::new(store.clone(), crate::ops::epoch::OPS_EPOCH)),
            store,
            secrets: Mutex::default(),
            runtime: std::sync::OnceLock::new(),
            network,
            snapshot: std::sync::OnceLock::new(),
            warned_snapshot: std::sync::atomic::AtomicBool::new(false),
            registry: std::sync::OnceLock::new(),
            volumes,
            services: crate::worker::service::Services::default(),
            computed: std::sync::atomic::AtomicUsize::new(0),
            requests: std::sync::atomic::AtomicUsize::new(0),
            collected,
            collected_reported: std::sync::atomic::AtomicBool::new(false),
            notes: crate::worker::userns::single_id_note().into_iter().collect(),
        }))
    }

    /// Progress events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.solver.subscribe()
    }

    /// Progress events, from now on, after the report of the start-up collection (a log event of the
    /// operation `engine`, such as `collected after an unclean stop: 2 mounts, 1 container`) when something
    /// was collected, and the engine's [notes](Self::notes). The report is emitted once: for the first
    /// caller, and to every subscriber at that moment.
    pub fn subscribe_with_start_report(&self) -> broadcast::Receiver<Event> {
        let rx = self.solver.subscribe();
        self.send_start_report();
        rx
    }

    /// As [`listen`](Self::listen), and the first caller of this or of
    /// [`subscribe_with_start_report`](Self::subscribe_with_start_report) also gets the engine's start-up
    /// lines (what it collected, its notes) as `engine` events.
    pub fn listen_with_start_report(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.listen(listener);
        self.send_start_report();
    }

    /// Sends the start-up lines once per engine.
    fn send_start_report(&self) {
        if !self.collected_reported.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let collected = (!self.collected.is_empty()).then(|| self.collected.to_string());
            for line in collected.into_iter().chain(self.notes.iter().cloned()) {
                self.solver.send(Event::new("engine", "start", EventKind::Log(line)));
            }
        }
    }

    /// Hands every progress event from now on to `listener`, synchronously, as it is sent: unlike a
    /// [`subscribe`](Self::subscribe)r, a listener never misses an event when many come at once (a run
    /// report). It must be quick and must not block; it lives as long as the engine.
    pub fn listen(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.solver.listen(Arc::new(listener));
    }

    /// Stops running work: kills every container this engine runs (services included), and starts no new
    /// one (execs asked for from now on fail, saying the engine is stopping).
    pub async fn stop_containers(&self) {
        // The runtime kills every container it runs, services' included, and returns once they are gone;
        // then the services are forgotten. The other way round, a service forgotten first would leave its
        // container to a kill in the background, which a process about to exit never runs.
        if let Some(Ok(rt)) = self.runtime.get() {
            rt.stop().await;
        }
        self.services.stop_all();
    }

    /// [`stop_containers`](Self::stop_containers), synchronously (a session dropped at the end of a program,
    /// whose runtime may run no other task, and whose cache directory may go right after).
    pub fn stop_containers_now(&self) {
        if let Some(Ok(rt)) = self.runtime.get() {
            rt.stop_now();
        }
        self.services.stop_all();
    }

    /// Reports a line of output from an operation.
    pub(crate) fn emit_log(&self, op: &str, digest: &Digest, line: String) {
        self.emit_event(op, digest, EventKind::Log(line));
    }

    /// Reports an event of an operation that is not a call (a leaf that does work, such as `publish`).
    pub(crate) fn emit_event(&self, op: &str, digest: &Digest, kind: EventKind) {
        self.solver.emit_event(op, digest, kind);
    }

    /// Sends an event made by the operations (a leaf's own progress, with its description).
    pub(crate) fn send_event(&self, event: Event) {
        self.solver.send(event);
    }

    /// The container runtime, detected on first use (`DAGGER_RS_RUNTIME`, default `runc`).
    pub(crate) fn runtime(&self) -> Result<&crate::worker::runtime::Runtime, OpError> {
        self.runtime
            .get_or_init(|| {
                crate::worker::runtime::Runtime::detect(
                    self.config.runtime.as_deref(),
                    self.config.exec_timeout,
                    &self.store.root().join("runtime"),
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| OpError::new(e.clone()))
    }

    /// The registry client, made on first use.
    pub(crate) fn registry(&self) -> Result<&crate::worker::oci::registry::RegistryClient, OpError> {
        self.registry
            .get_or_init(|| {
                let config = match &self.config.registries {
                    Some(c) => c.clone(),
                    None => crate::worker::oci::registry::RegistryConfig::from_env().map_err(|e| e.to_string())?,
                };
                crate::worker::oci::registry::RegistryClient::new(config).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| OpError::new(e.clone()))
    }

    /// How container filesystems are assembled for this engine: as configured, else chosen for its own
    /// cache directory on first use (see [`crate::worker::snapshot::choose`]).
    pub fn snapshotter(&self) -> &'static dyn crate::worker::snapshot::Snapshotter {
        match self.config.snapshotter {
            Some(s) => s.snapshotter(),
            None => self.chosen_snapshotter().0.snapshotter(),
        }
    }

    /// Why overlayfs is not used, when this engine chose copies because its probe mount failed.
    pub(crate) fn overlay_unusable(&self) -> Option<&str> {
        match self.config.snapshotter {
            Some(_) => None,
            None => self.chosen_snapshotter().1.as_deref(),
        }
    }

    fn chosen_snapshotter(&self) -> &(crate::worker::snapshot::SnapshotterKind, Option<String>) {
        self.snapshot
            .get_or_init(|| crate::worker::snapshot::choose(&self.store.root().join("tmp")))
    }

    /// Registers a call, returning its digest (the object's identity).
    pub(crate) fn register(&self, call: Call) -> Result<Digest, OpError> {
        Ok(self.solver.register(call)?)
    }

    /// The call behind a digest, from memory or the cache directory.
    pub(crate) fn call(&self, d: &Digest) -> Option<Call> {
        self.solver.call(d)
    }

    /// Keeps a secret's plaintext in session memory (never on disk, never in an ID).
    pub(crate) fn set_secret(&self, d: &Digest, plaintext: String) {
        self.secrets.lock().insert(d.clone(), plaintext);
    }

    /// Every secret plaintext this session holds (to keep them out of what events show).
    pub(crate) fn secret_plaintexts(&self) -> Vec<String> {
        self.secrets.lock().values().cloned().collect()
    }

    /// A secret's plaintext, if this session holds it.
    pub(crate) fn secret(&self, d: &Digest) -> Option<String> {
        self.secrets.lock().get(d).cloned()
    }

    /// Records a result computed outside `eval` (eager host reads).
    pub(crate) fn put_result(&self, d: &Digest, value: Evaluated) -> Result<Arc<Evaluated>, OpError> {
        Ok(self.solver.put_result(d, value)?)
    }

    /// Evaluates an object: from memory, from disk, by joining an identical evaluation in flight, or by
    /// computing it once (see `Solver::eval`) with the operations of `ops::router`.
    pub(crate) fn eval(self: &Arc<Self>, d: &Digest) -> BoxFuture<'static, Result<Arc<Evaluated>, OpError>> {
        self.solver.eval(d, self.clone())
    }
}
