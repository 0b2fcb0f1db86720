//! Containers: their state (layers, image config, mounts, last exec), how each `Container` builder field
//! changes it, and how `withExec` runs a process.
//!
//! A container's filesystem is a stack of layer directories (see [`crate::worker::snapshot`]). File operations
//! (`withNewFile`, `withDirectory`, `withoutFile`, …) each add a small layer; `withExec` mounts the stack with
//! overlayfs, runs the process with the OCI runtime (see [`crate::worker::runtime`]), and keeps the overlay's upper
//! directory as the next layer. Mounts (`withMounted*`) are not part of the layers: they are set up for each
//! exec, and what an exec writes into a mounted directory is read back, so `directory(path)` of a mounted path
//! sees it.

pub(crate) mod exec;
pub(crate) mod fs;
pub(crate) mod image;
pub(crate) mod mounts;
pub(crate) mod state;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::error::FieldError;
use crate::model::ids::Digest;
use crate::ops::container::exec::exec;
use crate::ops::container::image::{ImageOptions, as_tarball, export, from, import, publish};
use crate::ops::container::state::{ContainerState, ExecResult};
use crate::ops::engine::Engine;
use crate::ops::fields::ContainerField;
use crate::ops::op::{Op, change, run};
use crate::ops::value::Evaluated;
use crate::solver::events::EventKind;

/// The op computing a builder field of a container; `None` for a field this engine does not implement.
///
/// Each group of fields is tried in turn (state edits, mounts, filesystem, then images and exec here); a
/// group hands back a field that is not its own.
pub(crate) fn op(field: ContainerField) -> Option<Op> {
    use ContainerField as F;
    let field = match state::edit(field) {
        Ok(e) => return crate::ops::op::edit(e),
        Err(other) => other,
    };
    let field = match mounts::op(field) {
        Ok(op) => return op,
        Err(other) => other,
    };
    let field = match fs::op(field) {
        Ok(op) => return op,
        Err(other) => other,
    };
    match field {
        F::WithExec(a) => run(move |cx| async move {
            let st = cx.container()?.clone();
            exec(&cx.engine, &cx.digest, st, a)
                .await
                .map(|s| Evaluated::Container(Box::new(s)))
        }),
        F::From(a) => change(move |cx, st| {
            Box::pin(async move {
                let pinned = cx.hidden.get("$digest").and_then(Value::as_str);
                from(&cx.engine, &cx.digest, st, &a.address, pinned).await
            })
        }),
        F::Import(a) => {
            change(move |cx, st| Box::pin(async move { import(&cx.engine, &cx.digest, st, &a.source).await }))
        }
        F::AsTarball(a) => run(move |cx| async move {
            let options = ImageOptions {
                field: "asTarball",
                platform_variants: &a.platform_variants,
                media_types: a.media_types,
                forced_compression: a.forced_compression,
            };
            as_tarball(&cx.engine, cx.container()?, options).await
        }),
        _ => None,
    }
}

/// `Query.container(platform)`: an empty container.
pub(crate) fn empty(platform: Option<String>) -> Evaluated {
    let platform = platform
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| state::default_platform().to_owned());
    Evaluated::Container(Box::new(ContainerState {
        platform,
        ..ContainerState::default()
    }))
}

/// Computes a leaf of a container.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    field: ContainerField,
    st: &ContainerState,
) -> Result<Value, FieldError> {
    use ContainerField as F;
    let exec_blob = |name: &str, pick: fn(&ExecResult) -> &Digest| -> Result<Value, FieldError> {
        let e = st.exec.as_ref().ok_or_else(|| {
            FieldError::new(format!(
                "`{name}` needs a command to have run: call `withExec` before reading its output"
            ))
        })?;
        let bytes = engine.store.get_blob(pick(e))?;
        Ok(json!(String::from_utf8_lossy(&bytes)))
    };
    Ok(match field {
        F::Stdout => exec_blob("stdout", |e| &e.stdout)?,
        F::Stderr => exec_blob("stderr", |e| &e.stderr)?,
        F::CombinedOutput => exec_blob("combinedOutput", |e| &e.combined)?,
        F::ExitCode => json!(
            st.exec
                .as_ref()
                .ok_or_else(|| FieldError::new("`exitCode` needs a command to have run: call `withExec` first"))?
                .exit_code
        ),
        F::EnvVariable(a) => json!(st.env_value(&a.name)),
        F::Workdir => json!(st.workdir()),
        F::User => json!(st.config.user),
        F::Entrypoint => json!(st.config.entrypoint),
        F::DefaultArgs => json!(st.config.cmd),
        F::Label(a) => json!(st.config.labels.get(&a.name)),
        F::Mounts => json!(st.mounts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()),
        F::Platform => json!(st.platform),
        F::ImageRef => json!(st.image_ref),
        F::Exists(a) => json!(fs::exists(engine, st, a).await?),
        F::Export(a) => with_progress(engine, "Container.export", json!([&a.path]), export(engine, st, &a)).await?,
        F::Publish(a) => {
            with_progress(
                engine,
                "Container.publish",
                json!([&a.address]),
                publish(engine, st, &a),
            )
            .await?
        }
        other => return Err(crate::ops::args::unsupported("Container", other.name())),
    })
}

/// Runs image output (packing layers, uploading: it can take a while) with progress events of its own.
async fn with_progress(
    engine: &Arc<Engine>,
    op: &str,
    key: Value,
    work: impl Future<Output = Result<Value, FieldError>>,
) -> Result<Value, FieldError> {
    let key = Digest::of(format!("{op}{key}").as_bytes());
    engine.emit_event(op, &key, EventKind::Started);
    let started = std::time::Instant::now();
    let result = work.await;
    let kind = match &result {
        Ok(v) => {
            engine.emit_event(op, &key, EventKind::Log(v.as_str().unwrap_or("").to_owned()));
            EventKind::Done(started.elapsed().as_millis())
        }
        Err(e) => EventKind::Failed(e.message.clone()),
    };
    engine.emit_event(op, &key, kind);
    result
}
