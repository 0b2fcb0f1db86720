//! The engine of one session: the ID registry, evaluation with caching and in-flight deduplication, session
//! secrets, and progress events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::exec::FieldError;
use crate::ids::{Call, Digest};
use crate::store::Store;
use crate::tree::{FileEntry, Tree};

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
    pub snapshotter: Option<crate::snapshot::Snapshotter>,
    /// Registry mirrors, plain-HTTP registries and timeouts; `None` reads `DAGGER_RS_REGISTRY_MIRRORS`,
    /// `DAGGER_RS_INSECURE_REGISTRIES` and `DAGGER_RS_REGISTRY_TIMEOUT`.
    pub registries: Option<crate::oci::registry::RegistryConfig>,
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
            Some("overlay") => Some(crate::snapshot::Snapshotter::Overlay),
            Some("copy") => Some(crate::snapshot::Snapshotter::Copy),
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
        let mut registries = crate::oci::registry::RegistryConfig::from_env().map_err(|e| bad(e.to_string()))?;
        if !env_set("DAGGER_RS_REGISTRY_MIRRORS") {
            registries.mirrors = file.registry_mirrors;
        }
        if !env_set("DAGGER_RS_INSECURE_REGISTRIES") {
            registries.insecure = file.insecure_registries.into_iter().collect();
        }
        if let Some(t) = file
            .registry_timeout
            .filter(|_| !env_set(crate::oci::registry::TIMEOUT_ENV))
        {
            registries.timeouts =
                crate::oci::registry::RegistryTimeouts::parse(&t).map_err(|e| bad(format!("registryTimeout: {e}")))?;
        }
        config.registries = Some(registries);
        Ok(config)
    }
}

/// What an evaluated object holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Evaluated {
    /// A directory snapshot and its name (`src/`, `/` for a root).
    Dir {
        /// The tree.
        tree: Tree,
        /// The name `Directory.name` reports.
        name: String,
    },
    /// A file and its name.
    File {
        /// The name `File.name` reports.
        name: String,
        /// The contents and metadata.
        entry: FileEntry,
    },
    /// A secret: its name and URI (the plaintext stays in session memory).
    Secret {
        /// The name.
        name: String,
        /// The URI (`env://…`, `file://…`), empty for `setSecret`.
        uri: String,
    },
    /// A cache volume.
    Cache {
        /// Its key.
        key: String,
    },
    /// File metadata.
    Stat {
        /// `REGULAR`, `DIRECTORY`, `SYMLINK`.
        file_type: String,
        /// The base name.
        name: String,
        /// Permission bits.
        permissions: u32,
        /// Size in bytes.
        size: u64,
    },
    /// The host.
    Host,
    /// A container.
    Container(Box<crate::container::ContainerState>),
    /// A plain record (`EnvVariable`, `Label`, `Port`): its fields.
    Record(serde_json::Map<String, serde_json::Value>),
}

impl Evaluated {
    /// Whether this result is worth keeping on disk across sessions.
    fn persistent(&self) -> bool {
        matches!(
            self,
            Evaluated::Dir { .. }
                | Evaluated::File { .. }
                | Evaluated::Stat { .. }
                | Evaluated::Container(_)
                | Evaluated::Record(_)
        )
    }

    /// Whether a result loaded from disk can still be used (the layers it names may have been pruned).
    fn intact(&self, store: &Store) -> bool {
        match self {
            Evaluated::Container(c) => c.intact(store),
            _ => true,
        }
    }
}

/// One progress event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The operation, such as `Directory.withNewFile`.
    pub op: String,
    /// The first characters of its digest.
    pub id: String,
    /// What happened.
    pub kind: EventKind,
}

/// What happened to an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// It started.
    Started,
    /// Its result came from the cache.
    Cached,
    /// It finished, in this many milliseconds.
    Done(u128),
    /// It failed with this message.
    Failed(String),
    /// A line of output it produced.
    Log(String),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            EventKind::Started => write!(f, "▶ {} [{}]", self.op, self.id),
            EventKind::Cached => write!(f, "● {} [{}] cached", self.op, self.id),
            EventKind::Done(ms) => write!(f, "✔ {} [{}] {ms}ms", self.op, self.id),
            EventKind::Failed(msg) => write!(f, "✘ {} [{}] failed: {msg}", self.op, self.id),
            EventKind::Log(line) => write!(f, "│ {} [{}] {line}", self.op, self.id),
        }
    }
}

/// The `PRIVATE` cache volumes one exec holds, and those it must replace by a fresh, throwaway directory
/// because another exec holds them; released on drop.
pub struct CacheUse<'a> {
    engine: &'a Engine,
    held: Vec<String>,
    /// Keys of `PRIVATE` volumes in use elsewhere: this exec gets a fresh directory for each.
    pub fresh: std::collections::HashSet<String>,
}

impl Drop for CacheUse<'_> {
    fn drop(&mut self) {
        if let Ok(mut holders) = self.engine.private_holders.lock() {
            for k in &self.held {
                holders.remove(k);
            }
        }
    }
}

type EvalFuture = Shared<BoxFuture<'static, Result<Arc<Evaluated>, FieldError>>>;
/// An evaluation in flight, held weakly: it lives as long as some request awaits it, and is dropped (and so
/// stopped) when the last one is (its client went away).
type WeakEvalFuture = WeakShared<BoxFuture<'static, Result<Arc<Evaluated>, FieldError>>>;

/// One session's engine.
pub struct Engine {
    /// Setup.
    pub config: Config,
    /// The on-disk store.
    pub store: Store,
    calls: Mutex<HashMap<Digest, Call>>,
    /// Results in memory: held weakly, so a long chain's intermediate results are freed once the next link is
    /// computed (they stay on disk); [`Engine::recent`] and `kept` hold strong references.
    results: Mutex<HashMap<Digest, std::sync::Weak<Evaluated>>>,
    /// The most recent results, kept alive so repeated reads of one object do not go to disk.
    recent: Mutex<std::collections::VecDeque<Arc<Evaluated>>>,
    /// Results that are not kept on disk (secrets, cache volumes, the host): small, kept for the session.
    kept: Mutex<HashMap<Digest, Arc<Evaluated>>>,
    in_flight: Mutex<HashMap<Digest, WeakEvalFuture>>,
    secrets: Mutex<HashMap<Digest, String>>,
    events: broadcast::Sender<Event>,
    runtime: std::sync::OnceLock<Result<crate::runtime::Runtime, String>>,
    registry: std::sync::OnceLock<Result<crate::oci::registry::RegistryClient, String>>,
    /// Whether the copying-snapshotter warning was reported.
    pub warned_snapshot: std::sync::atomic::AtomicBool,
    /// Container networking.
    pub network: Arc<crate::network::Network>,
    private_holders: Mutex<std::collections::HashSet<String>>,
    cache_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// How many operations were computed (not served from a cache), for tests and benchmarks.
    pub computed: std::sync::atomic::AtomicUsize,
    /// How many GraphQL requests were answered (authorized and well-formed), for tests and benchmarks.
    pub requests: std::sync::atomic::AtomicUsize,
    /// What the engine collected at start-up from engines that stopped uncleanly (see [`crate::cleanup`]);
    /// reported once, as an event, by [`Engine::subscribe_with_start_report`].
    pub collected: crate::cleanup::Collected,
    collected_reported: std::sync::atomic::AtomicBool,
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
        let collected = crate::cleanup::start(&store);
        let (events, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            config,
            store,
            calls: Mutex::default(),
            results: Mutex::default(),
            recent: Mutex::default(),
            kept: Mutex::default(),
            in_flight: Mutex::default(),
            secrets: Mutex::default(),
            events,
            runtime: std::sync::OnceLock::new(),
            network: Arc::new(crate::network::Network::new()),
            warned_snapshot: std::sync::atomic::AtomicBool::new(false),
            registry: std::sync::OnceLock::new(),
            private_holders: Mutex::default(),
            cache_locks: Mutex::default(),
            computed: std::sync::atomic::AtomicUsize::new(0),
            requests: std::sync::atomic::AtomicUsize::new(0),
            collected,
            collected_reported: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// Progress events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Progress events, from now on, after the report of the start-up collection (a log event of the
    /// operation `engine`, such as `collected after an unclean stop: 2 mounts, 1 container`) when something
    /// was collected. The report is emitted once: for the first caller, and to every subscriber at that
    /// moment.
    pub fn subscribe_with_start_report(&self) -> broadcast::Receiver<Event> {
        let rx = self.events.subscribe();
        if !self.collected.is_empty() && !self.collected_reported.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let _ = self.events.send(Event {
                op: "engine".to_owned(),
                id: "start".to_owned(),
                kind: EventKind::Log(self.collected.to_string()),
            });
        }
        rx
    }

    /// Stops running work: kills every container this engine runs, and starts no new one (execs asked for
    /// from now on fail, saying the engine is stopping).
    pub async fn stop_containers(&self) {
        if let Some(Ok(rt)) = self.runtime.get() {
            rt.stop().await;
        }
    }

    fn emit(&self, call: &Call, digest: &Digest, kind: EventKind) {
        // Name the operation after the type the field belongs to (`Directory.file`, `Query.container`).
        let owner = match &call.parent {
            None => "Query".to_owned(),
            Some(p) => self
                .call(p)
                .map(|c| c.type_name)
                .unwrap_or_else(|| call.type_name.clone()),
        };
        let _ = self.events.send(Event {
            op: format!("{owner}.{}", call.field),
            id: digest.as_str()[..12].to_owned(),
            kind,
        });
    }

    /// Reports a line of output from an operation.
    pub fn emit_log(&self, op: &str, digest: &Digest, line: String) {
        self.emit_event(op, digest, EventKind::Log(line));
    }

    /// Reports an event of an operation that is not a call (a leaf that does work, such as `publish`).
    pub fn emit_event(&self, op: &str, digest: &Digest, kind: EventKind) {
        let _ = self.events.send(Event {
            op: op.to_owned(),
            id: digest.as_str()[..12].to_owned(),
            kind,
        });
    }

    /// The container runtime, detected on first use (`DAGGER_RS_RUNTIME`, default `runc`).
    pub fn runtime(&self) -> Result<&crate::runtime::Runtime, FieldError> {
        self.runtime
            .get_or_init(|| {
                crate::runtime::Runtime::detect(
                    self.config.runtime.as_deref(),
                    self.config.exec_timeout,
                    &self.store.root().join("runtime"),
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| FieldError::new(e.clone()))
    }

    /// The registry client, made on first use.
    pub fn registry(&self) -> Result<&crate::oci::registry::RegistryClient, FieldError> {
        self.registry
            .get_or_init(|| {
                let config = match &self.config.registries {
                    Some(c) => c.clone(),
                    None => crate::oci::registry::RegistryConfig::from_env().map_err(|e| e.to_string())?,
                };
                crate::oci::registry::RegistryClient::new(config).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| FieldError::new(e.clone()))
    }

    /// How container filesystems are assembled for this engine.
    pub fn snapshotter(&self) -> crate::snapshot::Snapshotter {
        self.config
            .snapshotter
            .unwrap_or_else(|| crate::snapshot::snapshotter(&self.store.root().join("tmp")))
    }

    /// Takes the locks and use counts an exec needs for its cache mounts: a `LOCKED` volume admits one exec at
    /// a time; a `PRIVATE` one gives a second concurrent user a fresh, throwaway volume.
    pub async fn cache_locks(
        &self,
        mounts: &[(String, crate::container::MountSource)],
    ) -> (Vec<tokio::sync::OwnedMutexGuard<()>>, CacheUse<'_>) {
        let mut guards = Vec::new();
        let mut held = Vec::new();
        let mut fresh = std::collections::HashSet::new();
        for (_, m) in mounts {
            if let crate::container::MountSource::Cache { key, sharing, .. } = m {
                match sharing.as_str() {
                    "LOCKED" => {
                        let lock = self
                            .cache_locks
                            .lock()
                            .map(|mut l| l.entry(key.clone()).or_default().clone())
                            .unwrap_or_default();
                        guards.push(lock.lock_owned().await);
                    }
                    "PRIVATE" => {
                        let taken = self
                            .private_holders
                            .lock()
                            .map(|mut h| !h.insert(key.clone()))
                            .unwrap_or(true);
                        if taken {
                            fresh.insert(key.clone());
                        } else {
                            held.push(key.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        (
            guards,
            CacheUse {
                engine: self,
                held,
                fresh,
            },
        )
    }

    /// The host directory of a cache volume for one exec, and whether it was just created (to seed it).
    pub fn cache_volume_dir(
        &self,
        key: &str,
        fresh: bool,
        scratch: &std::path::Path,
        n: usize,
    ) -> Result<(PathBuf, bool), FieldError> {
        if fresh {
            let dir = scratch.join(format!("c{n}"));
            std::fs::create_dir_all(&dir)
                .map_err(|e| FieldError::new(format!("cannot create {}: {e}", dir.display())))?;
            return Ok((dir, true));
        }
        let base = self
            .store
            .root()
            .join("cache-volumes")
            .join(Digest::of(key.as_bytes()).as_str());
        let data = base.join("data");
        if data.is_dir() {
            return Ok((data, false));
        }
        std::fs::create_dir_all(&base)
            .map_err(|e| FieldError::new(format!("cannot create {}: {e}", base.display())))?;
        let tmp = base.join(format!("new-{}", crate::snapshot::unique()));
        std::fs::create_dir_all(&tmp).map_err(|e| FieldError::new(format!("cannot create {}: {e}", tmp.display())))?;
        if std::fs::rename(&tmp, &data).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok((data, false));
        }
        Ok((data, true))
    }

    /// Registers a call, returning its digest (the object's identity).
    pub fn register(&self, call: Call) -> Result<Digest, FieldError> {
        let d = call.digest();
        let known = self.calls.lock().map(|c| c.contains_key(&d)).unwrap_or(false);
        if !known {
            // A record already on disk (from an earlier session) is the same call: no need to write it again.
            if !self.store.has_json("calls", &d) {
                self.store.put_json("calls", &d, &call)?;
            }
            if let Ok(mut calls) = self.calls.lock() {
                calls.insert(d.clone(), call);
            }
        }
        Ok(d)
    }

    /// The call behind a digest, from memory or the cache directory.
    pub fn call(&self, d: &Digest) -> Option<Call> {
        if let Some(c) = self.calls.lock().ok().and_then(|c| c.get(d).cloned()) {
            return Some(c);
        }
        let c: Call = self.store.get_json("calls", d)?;
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(d.clone(), c.clone());
        }
        Some(c)
    }

    /// Keeps a secret's plaintext in session memory (never on disk, never in an ID).
    pub fn set_secret(&self, d: &Digest, plaintext: String) {
        if let Ok(mut s) = self.secrets.lock() {
            s.insert(d.clone(), plaintext);
        }
    }

    /// A secret's plaintext, if this session holds it.
    pub fn secret(&self, d: &Digest) -> Option<String> {
        self.secrets.lock().ok().and_then(|s| s.get(d).cloned())
    }

    /// Every plaintext this session holds, to scrub from output.
    pub fn secret_values(&self) -> Vec<String> {
        self.secrets
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Records a result computed outside `eval` (eager host reads).
    pub fn put_result(&self, d: &Digest, value: Evaluated) -> Result<Arc<Evaluated>, FieldError> {
        let persistent = value.persistent();
        if persistent {
            self.store.put_json("results", d, &value)?;
        }
        let v = Arc::new(value);
        self.remember(d, &v, persistent);
        Ok(v)
    }

    /// How many recent results stay in memory while nothing else holds them.
    const RECENT: usize = 64;

    fn remember(&self, d: &Digest, v: &Arc<Evaluated>, persistent: bool) {
        if !persistent {
            if let Ok(mut k) = self.kept.lock() {
                k.insert(d.clone(), v.clone());
            }
            return;
        }
        if let Ok(mut r) = self.results.lock() {
            // Forget entries whose results are gone, now and then, so the map stays the size of what is live.
            if r.len() >= 4096 && r.len().is_power_of_two() {
                r.retain(|_, w| w.strong_count() > 0);
            }
            r.insert(d.clone(), Arc::downgrade(v));
        }
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= Self::RECENT {
                recent.pop_front();
            }
            recent.push_back(v.clone());
        }
    }

    /// A result held in memory.
    fn in_memory(&self, d: &Digest) -> Option<Arc<Evaluated>> {
        if let Some(v) = self.kept.lock().ok().and_then(|k| k.get(d).cloned()) {
            return Some(v);
        }
        self.results
            .lock()
            .ok()
            .and_then(|r| r.get(d).and_then(std::sync::Weak::upgrade))
    }

    /// A result from memory or, reported as cached, from disk.
    fn ready(&self, d: &Digest, call: &Call) -> Option<Arc<Evaluated>> {
        if let Some(v) = self.in_memory(d) {
            return Some(v);
        }
        let v = self
            .store
            .get_json::<Evaluated>("results", d)
            .filter(|v| v.intact(&self.store))?;
        self.emit(call, d, EventKind::Cached);
        let v = Arc::new(v);
        self.remember(d, &v, true);
        Some(v)
    }

    /// The objects `call` is computed from: its parent and its object arguments (also inside lists).
    fn inputs(call: &Call) -> Vec<Digest> {
        fn ids(v: &serde_json::Value, out: &mut Vec<Digest>) {
            match v {
                serde_json::Value::Object(m) => {
                    if let Some(d) = m.get("$id").and_then(|d| d.as_str()).and_then(Digest::parse) {
                        out.push(d);
                    } else {
                        m.values().for_each(|v| ids(v, out));
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| ids(v, out)),
                _ => {}
            }
        }
        let mut out: Vec<Digest> = call.parent.iter().cloned().collect();
        call.args.values().for_each(|v| ids(v, &mut out));
        out
    }

    /// The objects `d` depends on that are not ready yet, dependencies first, found with an explicit stack
    /// (a chain of any length costs no native stack). Results found on disk on the way are loaded.
    fn missing_inputs(&self, d: &Digest) -> Result<Vec<(Digest, Call)>, FieldError> {
        let mut order = Vec::new();
        let mut seen = std::collections::HashSet::new();
        seen.insert(d.clone());
        let root = self.call(d).ok_or_else(|| unknown(d))?;
        // An entry with its call has had its inputs pushed above it: it comes next once they are done.
        let mut stack: Vec<(Digest, Option<Call>)> = Vec::new();
        for input in Self::inputs(&root).into_iter().rev() {
            stack.push((input, None));
        }
        // Keep the held results alive until the caller has used them.
        let mut held = Vec::new();
        while let Some((digest, expanded)) = stack.pop() {
            if let Some(call) = expanded {
                order.push((digest, call));
                continue;
            }
            if !seen.insert(digest.clone()) {
                continue;
            }
            let call = self.call(&digest).ok_or_else(|| unknown(&digest))?;
            if let Some(v) = self.ready(&digest, &call) {
                held.push(v);
                continue;
            }
            let inputs = Self::inputs(&call);
            stack.push((digest, Some(call)));
            for input in inputs.into_iter().rev() {
                if !seen.contains(&input) {
                    stack.push((input, None));
                }
            }
        }
        if let Ok(mut recent) = self.recent.lock() {
            for v in held {
                if recent.len() >= Self::RECENT {
                    recent.pop_front();
                }
                recent.push_back(v);
            }
        }
        Ok(order)
    }

    /// Evaluates an object: from memory, from disk, by joining an identical evaluation in flight, or by
    /// computing it once.
    ///
    /// The objects it is built from are evaluated first, bottom up, in a loop: computing an object then finds
    /// its parent ready, so evaluation never nests deeper than one level per object argument, however long
    /// the chain of calls is.
    pub fn eval(self: &Arc<Self>, d: &Digest) -> BoxFuture<'static, Result<Arc<Evaluated>, FieldError>> {
        let this = self.clone();
        let d = d.clone();
        Box::pin(async move {
            if let Some(v) = this.in_memory(&d) {
                return Ok(v);
            }
            let call = this.call(&d).ok_or_else(|| unknown(&d))?;
            if let Some(v) = this.ready(&d, &call) {
                return Ok(v);
            }
            let mut below = None;
            for (dep, dep_call) in this.missing_inputs(&d)? {
                // Held until the next one is computed, so a chain's parent is never dropped before its child
                // has read it.
                below = Some(this.eval_one(&dep, dep_call).await?);
            }
            let v = this.eval_one(&d, call).await;
            drop(below);
            v
        })
    }

    /// Evaluates one object whose inputs are (normally) ready: joins an evaluation in flight or starts one.
    async fn eval_one(self: &Arc<Self>, d: &Digest, call: Call) -> Result<Arc<Evaluated>, FieldError> {
        if let Some(v) = self.ready(d, &call) {
            return Ok(v);
        }
        let fut = {
            let Ok(mut in_flight) = self.in_flight.lock() else {
                return Err(FieldError::new("internal error: evaluation state is poisoned"));
            };
            // In flight entries are weak: an evaluation lives while a request awaits it, and is dropped
            // (its containers stopped) with the last one.
            match in_flight.get(d).and_then(WeakShared::upgrade) {
                Some(f) => f,
                None => {
                    let engine = self.clone();
                    let digest = d.clone();
                    let f: BoxFuture<'static, Result<Arc<Evaluated>, FieldError>> = Box::pin(async move {
                        engine.emit(&call, &digest, EventKind::Started);
                        let mut running = Running {
                            engine: &engine,
                            call: &call,
                            digest: &digest,
                            finished: false,
                        };
                        let started = Instant::now();
                        engine.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let result = crate::core::compute(&engine, &call).await;
                        running.finished = true;
                        match &result {
                            Ok(_) => engine.emit(&call, &digest, EventKind::Done(started.elapsed().as_millis())),
                            Err(e) => engine.emit(&call, &digest, EventKind::Failed(e.message.clone())),
                        }
                        let result = match result {
                            Ok(v) => engine.put_result(&digest, v),
                            Err(e) => Err(e),
                        };
                        if let Ok(mut f) = engine.in_flight.lock() {
                            f.remove(&digest);
                        }
                        result
                    });
                    let shared: EvalFuture = f.shared();
                    if let Some(weak) = shared.downgrade() {
                        in_flight.insert(d.clone(), weak);
                    }
                    shared
                }
            }
        };
        fut.await
    }
}

/// An evaluation under way; dropped unfinished (no request waits for it any more), it reports the operation
/// as cancelled so progress displays do not wait for it, and forgets it.
struct Running<'a> {
    engine: &'a Engine,
    call: &'a Call,
    digest: &'a Digest,
    finished: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.engine.emit(
            self.call,
            self.digest,
            EventKind::Failed("cancelled: no request waits for it any more".into()),
        );
        if let Ok(mut f) = self.engine.in_flight.lock() {
            f.remove(self.digest);
        }
    }
}

fn unknown(d: &Digest) -> FieldError {
    FieldError::new(format!("unknown object `{d}`: it was never created on this engine"))
}
