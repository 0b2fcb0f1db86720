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

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::error::FieldError;
use crate::model::ids::{Call, Digest};
use crate::ops::args::s;
use crate::ops::container::exec::exec;
use crate::ops::container::fs::*;
use crate::ops::container::image::*;
use crate::ops::container::state::{ContainerState, ExecResult};
use crate::ops::engine::Engine;
use crate::ops::value::Evaluated;

/// Computes a `Container` builder field.
pub(crate) async fn compute(
    engine: &Arc<Engine>,
    call: &Call,
    d: &Digest,
    parent: Option<&ContainerState>,
) -> Result<Evaluated, FieldError> {
    let args: Map<String, Value> = call.args.clone().into_iter().collect();
    if call.field == "container" {
        let mut st = ContainerState {
            platform: s(&args, "platform").to_owned(),
            ..ContainerState::default()
        };
        if st.platform.is_empty() {
            st.platform = crate::ops::container::state::default_platform().to_owned();
        }
        return Ok(Evaluated::Container(Box::new(st)));
    }
    let Some(parent) = parent else {
        return Err(FieldError::new("internal error: a container field without a container"));
    };
    let mut st = parent.clone();
    let field = call.field.as_str();
    match field {
        "withExec" => {
            return exec(engine, d, st, &args)
                .await
                .map(|s| Evaluated::Container(Box::new(s)));
        }
        "from" => from(engine, d, &mut st, &args).await?,
        "import" => import(engine, d, &mut st, &args).await?,
        "asTarball" => return as_tarball(engine, &st, &args).await,
        "file" | "directory" | "rootfs" | "stat" => return read(engine, &st, field, &args).await,
        other => {
            let done = crate::ops::container::state::edit(&mut st, other, &args)?
                || crate::ops::container::mounts::compute(engine, &mut st, other, &args).await?
                || crate::ops::container::fs::compute(engine, d, &mut st, other, &args).await?;
            if !done {
                return Err(crate::ops::args::unsupported("Container", other));
            }
        }
    }
    Ok(Evaluated::Container(Box::new(st)))
}

/// Leaves of a container.
pub(crate) async fn leaf(
    engine: &Arc<Engine>,
    name: &str,
    args: &Map<String, Value>,
    st: &ContainerState,
) -> Result<Option<Value>, FieldError> {
    let exec_blob = |pick: fn(&ExecResult) -> &Digest| -> Result<Value, FieldError> {
        let e = st.exec.as_ref().ok_or_else(|| {
            FieldError::new(format!(
                "`{name}` needs a command to have run: call `withExec` before reading its output"
            ))
        })?;
        let bytes = engine.store.get_blob(pick(e))?;
        Ok(json!(String::from_utf8_lossy(&bytes)))
    };
    Ok(Some(match name {
        "stdout" => exec_blob(|e| &e.stdout)?,
        "stderr" => exec_blob(|e| &e.stderr)?,
        "combinedOutput" => exec_blob(|e| &e.combined)?,
        "exitCode" => json!(
            st.exec
                .as_ref()
                .ok_or_else(|| FieldError::new("`exitCode` needs a command to have run: call `withExec` first"))?
                .exit_code
        ),
        "envVariable" => json!(st.env_value(s(args, "name"))),
        "workdir" => json!(st.workdir()),
        "user" => json!(st.config.user),
        "entrypoint" => json!(st.config.entrypoint),
        "defaultArgs" => json!(st.config.cmd),
        "label" => json!(st.config.labels.get(s(args, "name"))),
        "mounts" => json!(st.mounts.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()),
        "platform" => json!(st.platform),
        "imageRef" => json!(st.image_ref),
        "exists" => json!(exists(engine, st, args).await?),
        "export" | "publish" => {
            // Image output can take a while (packing layers, uploading): it gets progress events of its own.
            let op = format!("Container.{name}");
            let key = Digest::of(format!("{op}{}", json!(args)).as_bytes());
            engine.emit_event(&op, &key, crate::solver::events::EventKind::Started);
            let started = std::time::Instant::now();
            let result = if name == "export" {
                export(engine, st, args).await
            } else {
                publish(engine, st, args).await
            };
            let kind = match &result {
                Ok(v) => {
                    engine.emit_event(
                        &op,
                        &key,
                        crate::solver::events::EventKind::Log(v.as_str().unwrap_or("").to_owned()),
                    );
                    crate::solver::events::EventKind::Done(started.elapsed().as_millis())
                }
                Err(e) => crate::solver::events::EventKind::Failed(e.message.clone()),
            };
            engine.emit_event(&op, &key, kind);
            result?
        }
        _ => return Ok(None),
    }))
}
