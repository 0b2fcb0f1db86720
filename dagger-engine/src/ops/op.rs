//! What computes one builder call: an [`Op`] gets a [`Cx`] (the engine, the call's digest, its parent's
//! value) and returns the new object's value. Each type's module maps its typed fields to ops in one
//! `match`, whose default arm (`None`) is the one place that says a field is not implemented.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::model::error::FieldError;
use crate::model::ids::Digest;
use crate::model::tree::{FileEntry, Tree};
use crate::ops::container::state::ContainerState;
use crate::ops::engine::Engine;
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
    pub(crate) async fn eval(&self, d: &Digest) -> Result<Arc<Evaluated>, FieldError> {
        self.engine.eval(d).await
    }

    fn parent(&self) -> Result<&Evaluated, FieldError> {
        self.parent
            .as_deref()
            .ok_or_else(|| FieldError::new("internal error: a field without its parent object"))
    }

    /// The parent directory: its tree and name.
    pub(crate) fn dir(&self) -> Result<(&Tree, &str), FieldError> {
        self.parent()?.as_dir()
    }

    /// The parent file: its name and entry.
    pub(crate) fn file(&self) -> Result<(&str, &FileEntry), FieldError> {
        self.parent()?.as_file()
    }

    /// The parent container.
    pub(crate) fn container(&self) -> Result<&ContainerState, FieldError> {
        match self.parent()? {
            Evaluated::Container(st) => Ok(st),
            _ => Err(FieldError::new("internal error: expected a container")),
        }
    }
}

/// Computes one builder call from its context.
pub(crate) type Op = Box<dyn FnOnce(Cx) -> BoxFuture<'static, Result<Evaluated, FieldError>> + Send>;

/// An [`Op`] from an async function of the context.
pub(crate) fn run<F, Fut>(f: F) -> Option<Op>
where
    F: FnOnce(Cx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Evaluated, FieldError>> + Send + 'static,
{
    Some(Box::new(move |cx| Box::pin(f(cx))))
}

/// An [`Op`] that needs nothing but a value it already has.
pub(crate) fn value(v: Result<Evaluated, FieldError>) -> Option<Op> {
    run(move |_| async move { v })
}

/// An [`Op`] that changes a copy of the parent container (which may evaluate arguments, write layers, …).
pub(crate) fn change<F>(f: F) -> Option<Op>
where
    F: for<'a> FnOnce(&'a Cx, &'a mut ContainerState) -> BoxFuture<'a, Result<(), FieldError>> + Send + 'static,
{
    run(move |cx| async move {
        let mut st = cx.container()?.clone();
        f(&cx, &mut st).await?;
        Ok(Evaluated::Container(Box::new(st)))
    })
}

/// An [`Op`] that edits the parent container's state alone (no filesystem, no engine).
pub(crate) fn edit<F>(f: F) -> Option<Op>
where
    F: FnOnce(&mut ContainerState) -> Result<(), FieldError> + Send + 'static,
{
    run(move |cx| async move {
        let mut st = cx.container()?.clone();
        f(&mut st)?;
        Ok(Evaluated::Container(Box::new(st)))
    })
}

/// What the ops' unit tests share: an engine on a temporary cache directory (no runtime, no root) and a way
/// to run one field on a parent value.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::{Map, Value};

    use super::*;
    use crate::ops::fields::Field;

    /// An engine whose cache directory and workdir are inside `dir`.
    pub(crate) fn engine(dir: &tempfile::TempDir) -> Arc<Engine> {
        Engine::new(crate::Config {
            cache_dir: dir.path().join("cache"),
            ..crate::Config::for_dir(dir.path())
        })
        .expect("engine")
    }

    /// The op of `Type.field` with `args` (JSON, object arguments as `{"$id": digest}`), `None` when the
    /// engine does not implement it.
    pub(crate) fn op_of(type_name: &str, field: &str, args: Value) -> Option<Op> {
        let args: Map<String, Value> = args.as_object().cloned().expect("arguments are an object");
        match Field::parse(type_name, field, &args).expect("the field and its arguments fit the schema") {
            Field::Directory(f) => crate::ops::directory::op(f),
            Field::File(f) => crate::ops::file::op(f),
            Field::Container(f) => crate::ops::container::op(f),
            Field::Host(f) => crate::ops::host::op(f),
            _ => None,
        }
    }

    /// Runs `Type.field(args)` on `parent`.
    pub(crate) async fn apply(
        engine: &Arc<Engine>,
        parent: Evaluated,
        field: &str,
        args: Value,
    ) -> Result<Evaluated, FieldError> {
        let type_name = match &parent {
            Evaluated::Dir { .. } => "Directory",
            Evaluated::File { .. } => "File",
            Evaluated::Container(_) => "Container",
            _ => "Host",
        };
        let op = op_of(type_name, field, args).expect("an implemented field");
        op(Cx {
            engine: engine.clone(),
            // Unique, as a call's digest is: it names the layers a container op makes.
            digest: Digest::of(format!("{field}-{}", crate::worker::snapshot::unique()).as_bytes()),
            parent: Some(Arc::new(parent)),
            hidden: serde_json::Map::new(),
        })
        .await
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
