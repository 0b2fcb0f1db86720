//! Mounts: `withMountedDirectory`, `withMountedFile`, `withMountedCache`, `withMountedSecret`,
//! `withMountedTemp` and `withoutMount` record what an exec mounts where; they are set up for each exec (see
//! [`crate::ops::container::exec`]), not written into the layers.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::model::error::FieldError;
use crate::ops::args::{b, digest_arg, i, s};
use crate::ops::container::fs::{obj, owner_arg};
use crate::ops::container::state::{ContainerState, MountSource, path_arg};
use crate::ops::engine::Engine;
use crate::ops::value::Evaluated;

/// Applies a mount field to `st`; `false` when `field` is not one.
pub(crate) async fn compute(
    engine: &Arc<Engine>,
    st: &mut ContainerState,
    field: &str,
    args: &Map<String, Value>,
) -> Result<bool, FieldError> {
    const FIELDS: &[&str] = &[
        "withMountedDirectory",
        "withMountedFile",
        "withMountedCache",
        "withMountedSecret",
        "withMountedTemp",
        "withoutMount",
    ];
    if !FIELDS.contains(&field) {
        return Ok(false);
    }
    let path = path_arg(st, args, "path")?;
    let source = match field {
        "withMountedDirectory" => {
            let dir = obj(engine, args, "source").await?;
            let Evaluated::Dir { tree, .. } = &*dir else {
                return Err(FieldError::new("`source` is not a directory"));
            };
            MountSource::Dir {
                tree: tree.clone(),
                read_only: b(args, "readOnly"),
                owner: owner_arg(engine, st, args)?,
            }
        }
        "withMountedFile" => {
            let f = obj(engine, args, "source").await?;
            let Evaluated::File { entry, .. } = &*f else {
                return Err(FieldError::new("`source` is not a file"));
            };
            MountSource::File {
                entry: entry.clone(),
                owner: owner_arg(engine, st, args)?,
            }
        }
        "withMountedCache" => cache(engine, st, args).await?,
        "withMountedSecret" => MountSource::Secret {
            secret: digest_arg(args, "source").ok_or_else(|| FieldError::new("missing argument `source`"))?,
            mode: i(args, "mode").unwrap_or(0o400) as u32,
            owner: owner_arg(engine, st, args)?,
        },
        "withMountedTemp" => MountSource::Temp {
            size: i(args, "size").filter(|s| *s > 0).map(|s| s as u64),
        },
        _ => {
            st.mounts.retain(|(m, _)| *m != path);
            return Ok(true);
        }
    };
    st.add_mount(path, source);
    Ok(true)
}

/// `withMountedCache`: the volume, what a new one starts with, its sharing mode and owner.
async fn cache(
    engine: &Arc<Engine>,
    st: &ContainerState,
    args: &Map<String, Value>,
) -> Result<MountSource, FieldError> {
    let cache = obj(engine, args, "cache").await?;
    let Evaluated::Cache { key } = &*cache else {
        return Err(FieldError::new("`cache` is not a cache volume"));
    };
    let seed = match digest_arg(args, "source") {
        Some(sd) => match &*engine.eval(&sd).await? {
            Evaluated::Dir { tree, .. } => Some(tree.clone()),
            _ => return Err(FieldError::new("`source` is not a directory")),
        },
        None => None,
    };
    let sharing = match s(args, "sharing") {
        "" => "SHARED".to_owned(),
        other => other.to_owned(),
    };
    Ok(MountSource::Cache {
        key: key.clone(),
        sharing,
        seed,
        owner: owner_arg(engine, st, args)?,
    })
}
