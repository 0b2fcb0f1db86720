//! What computes one builder call: an [`Op`] gets a [`Cx`] (the engine, the call's digest, its parent's
//! value) and returns the new object's value. Each type's module maps its typed fields to ops in one
//! `match`, whose default arm (`None`) is the one place that says a field is not implemented.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::model::ids::Digest;
use crate::model::tree::{FileEntry, Tree};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::value::Evaluated;

/// What an operation works with.
pub(crate) struct Cx {
    /// The engine of the session.
    pub(crate) engine: Arc<Engine>,
    /// The digest of the call being computed (names the layers it makes).
    pub(crate) digest: Digest,
    /// The parent object's value (`None` for fields of `Query`).
    pub(crate) parent: Option<Arc<Evaluated>>,
    /// What the engine added to the call when it was recorded (`$`-prefixed: a pinned image digest, the
    /// digest of host content, a secret's keyed MAC).
    pub(crate) hidden: serde_json::Map<String, serde_json::Value>,
}

impl Cx {
    /// Evaluates an object argument.
    pub(crate) async fn eval(&self, d: &Digest) -> Result<Arc<Evaluated>, OpError> {
        self.engine.eval(d).await
    }

    /// The parent object's value.
    pub(crate) fn parent(&self) -> Result<&Evaluated, OpError> {
        self.parent
            .as_deref()
            .ok_or_else(|| OpError::new("internal error: a field without its parent object"))
    }

    /// The parent directory: its tree and name.
    pub(crate) fn dir(&self) -> Result<(&Tree, &str), OpError> {
        self.parent()?.as_dir()
    }

    /// The parent file: its name and entry.
    pub(crate) fn file(&self) -> Result<(&str, &FileEntry), OpError> {
        self.parent()?.as_file()
    }
}

/// Computes one builder call from its context.
pub(crate) type Op = Box<dyn FnOnce(Cx) -> BoxFuture<'static, Result<Evaluated, OpError>> + Send>;

/// An [`Op`] from an async function of the context.
pub(crate) fn run<F, Fut>(f: F) -> Option<Op>
where
    F: FnOnce(Cx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Evaluated, OpError>> + Send + 'static,
{
    Some(Box::new(move |cx| Box::pin(f(cx))))
}

/// An [`Op`] that needs nothing but a value it already has.
pub(crate) fn value(v: Result<Evaluated, OpError>) -> Option<Op> {
    run(move |_| async move { v })
}

/// What the ops' unit tests share: an engine on a temporary cache directory (no runtime, no root) and a way
/// to run one field on a parent value.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::{Map, Value};

    use super::*;

    /// An engine whose cache directory and workdir are inside `dir`.
    pub(crate) fn engine(dir: &tempfile::TempDir) -> Arc<Engine> {
        Engine::new(crate::Config {
            cache_dir: dir.path().join("cache"),
            ..crate::Config::for_dir(dir.path())
        })
        .expect("engine")
    }

    /// Runs an op (from a type module's `op`) on `parent`; `None` (an unimplemented field) panics.
    pub(crate) async fn apply(engine: &Arc<Engine>, parent: Evaluated, op: Option<Op>) -> Result<Evaluated, OpError> {
        let op = op.expect("an implemented field");
        op(Cx {
            engine: engine.clone(),
            digest: Digest::of(crate::worker::snapshot::unique().as_bytes()),
            parent: Some(Arc::new(parent)),
            hidden: serde_json::Map::new(),
        })
        .await
    }

    /// The coerced JSON arguments of a field, as an object.
    pub(crate) fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("arguments are an object")
    }

    /// A file value whose contents are `text`, stored.
    pub(crate) fn file(engine: &Arc<Engine>, name: &str, text: &str, mode: u32) -> Evaluated {
        let blob = engine.store.put_blob(text.as_bytes()).expect("blob");
        Evaluated::File {
            name: name.into(),
            entry: FileEntry {
                mode,
                blob,
                size: text.len() as u64,
                mtime: None,
            },
        }
    }

    /// A directory value holding files `(path, text)`, stored.
    pub(crate) fn dir(engine: &Arc<Engine>, files: &[(&str, &str)]) -> Evaluated {
        let mut tree = Tree::default();
        for (path, text) in files {
            let Evaluated::File { entry, .. } = file(engine, "f", text, 0o644) else {
                unreachable!("a file");
            };
            tree.put(path, crate::model::tree::Entry::File(entry), true)
                .expect("put");
        }
        Evaluated::Dir { tree, name: "/".into() }
    }

    /// Registers `value` as the result of a call of its own and returns its digest (for object arguments).
    pub(crate) fn object(engine: &Arc<Engine>, value: Evaluated) -> Digest {
        let d = engine
            .register(crate::model::ids::Call {
                type_name: "Directory".into(),
                parent: None,
                field: format!("test{}", crate::worker::snapshot::unique()),
                args: Default::default(),
            })
            .expect("register");
        engine.put_result(&d, value).expect("result");
        d
    }

    /// An empty directory.
    pub(crate) fn empty_dir() -> Evaluated {
        Evaluated::Dir {
            tree: Tree::default(),
            name: "/".into(),
        }
    }

    /// The tree of a directory value.
    pub(crate) fn tree(v: &Evaluated) -> &Tree {
        v.as_dir().expect("a directory").0
    }
}
