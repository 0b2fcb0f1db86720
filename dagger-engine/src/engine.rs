//! The engine of one session: the ID registry, evaluation with caching and in-flight deduplication, session
//! secrets, and progress events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_dir: Store::default_dir(),
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
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
}

impl Evaluated {
    /// Whether this result is worth keeping on disk across sessions.
    fn persistent(&self) -> bool {
        matches!(
            self,
            Evaluated::Dir { .. } | Evaluated::File { .. } | Evaluated::Stat { .. }
        )
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

type EvalFuture = Shared<BoxFuture<'static, Result<Arc<Evaluated>, FieldError>>>;

/// One session's engine.
pub struct Engine {
    /// Setup.
    pub config: Config,
    /// The on-disk store.
    pub store: Store,
    calls: Mutex<HashMap<Digest, Call>>,
    results: Mutex<HashMap<Digest, Arc<Evaluated>>>,
    in_flight: Mutex<HashMap<Digest, EvalFuture>>,
    secrets: Mutex<HashMap<Digest, String>>,
    events: broadcast::Sender<Event>,
    /// How many operations were computed (not served from a cache), for tests and benchmarks.
    pub computed: std::sync::atomic::AtomicUsize,
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
        let (events, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            config,
            store,
            calls: Mutex::default(),
            results: Mutex::default(),
            in_flight: Mutex::default(),
            secrets: Mutex::default(),
            events,
            computed: std::sync::atomic::AtomicUsize::new(0),
        }))
    }

    /// Progress events, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, call: &Call, digest: &Digest, kind: EventKind) {
        let _ = self.events.send(Event {
            op: format!("{}.{}", call.type_name, call.field),
            id: digest.as_str()[..12].to_owned(),
            kind,
        });
    }

    /// Registers a call, returning its digest (the object's identity).
    pub fn register(&self, call: Call) -> Result<Digest, FieldError> {
        let d = call.digest();
        let known = self.calls.lock().map(|c| c.contains_key(&d)).unwrap_or(false);
        if !known {
            self.store.put_json("calls", &d, &call)?;
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
        if value.persistent() {
            self.store.put_json("results", d, &value)?;
        }
        let v = Arc::new(value);
        if let Ok(mut r) = self.results.lock() {
            r.insert(d.clone(), v.clone());
        }
        Ok(v)
    }

    /// Evaluates an object: from memory, from disk, by joining an identical evaluation in flight, or by
    /// computing it once.
    pub fn eval(self: &Arc<Self>, d: &Digest) -> BoxFuture<'static, Result<Arc<Evaluated>, FieldError>> {
        let this = self.clone();
        let d = d.clone();
        Box::pin(async move {
            if let Some(v) = this.results.lock().ok().and_then(|r| r.get(&d).cloned()) {
                return Ok(v);
            }
            let call = this
                .call(&d)
                .ok_or_else(|| FieldError::new(format!("unknown object `{d}`: it was never created on this engine")))?;
            if let Some(v) = this.store.get_json::<Evaluated>("results", &d) {
                this.emit(&call, &d, EventKind::Cached);
                let v = Arc::new(v);
                if let Ok(mut r) = this.results.lock() {
                    r.insert(d.clone(), v.clone());
                }
                return Ok(v);
            }
            let fut = {
                let Ok(mut in_flight) = this.in_flight.lock() else {
                    return Err(FieldError::new("internal error: evaluation state is poisoned"));
                };
                match in_flight.get(&d) {
                    Some(f) => f.clone(),
                    None => {
                        let engine = this.clone();
                        let digest = d.clone();
                        let call2 = call.clone();
                        let f: BoxFuture<'static, Result<Arc<Evaluated>, FieldError>> = Box::pin(async move {
                            engine.emit(&call2, &digest, EventKind::Started);
                            let started = Instant::now();
                            engine.computed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let result = crate::core::compute(&engine, &call2).await;
                            match &result {
                                Ok(_) => engine.emit(&call2, &digest, EventKind::Done(started.elapsed().as_millis())),
                                Err(e) => engine.emit(&call2, &digest, EventKind::Failed(e.message.clone())),
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
                        let shared = f.shared();
                        in_flight.insert(d.clone(), shared.clone());
                        shared
                    }
                }
            };
            fut.await
        })
    }
}
