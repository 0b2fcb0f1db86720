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
