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
    let args = args.clone();
    match field {
        "withMountedDirectory" => {
            let path = path_arg(st, &args, "path")?;
            let dir = obj(engine, &args, "source").await?;
            let Evaluated::Dir { tree, .. } = &*dir else {
                return Err(FieldError::new("`source` is not a directory"));
            };
            let owner = owner_arg(engine, st, &args)?;
            st.add_mount(
                path,
                MountSource::Dir {
                    tree: tree.clone(),
                    read_only: b(&args, "readOnly"),
                    owner,
                },
            );
        }
        "withMountedFile" => {
            let path = path_arg(st, &args, "path")?;
            let f = obj(engine, &args, "source").await?;
            let Evaluated::File { entry, .. } = &*f else {
                return Err(FieldError::new("`source` is not a file"));
            };
            let owner = owner_arg(engine, st, &args)?;
            st.add_mount(
                path,
                MountSource::File {
                    entry: entry.clone(),
                    owner,
                },
            );
        }
        "withMountedCache" => {
            let path = path_arg(st, &args, "path")?;
            let cache = obj(engine, &args, "cache").await?;
            let Evaluated::Cache { key } = &*cache else {
                return Err(FieldError::new("`cache` is not a cache volume"));
            };
            let seed = match digest_arg(&args, "source") {
                Some(sd) => match &*engine.eval(&sd).await? {
                    Evaluated::Dir { tree, .. } => Some(tree.clone()),
                    _ => return Err(FieldError::new("`source` is not a directory")),
                },
                None => None,
            };
            let sharing = match s(&args, "sharing") {
                "" => "SHARED".to_owned(),
                other => other.to_owned(),
            };
            let owner = owner_arg(engine, st, &args)?;
            st.add_mount(
                path,
                MountSource::Cache {
                    key: key.clone(),
                    sharing,
                    seed,
                    owner,
                },
            );
        }
        "withMountedSecret" => {
            let path = path_arg(st, &args, "path")?;
            let secret = digest_arg(&args, "source").ok_or_else(|| FieldError::new("missing argument `source`"))?;
            let owner = owner_arg(engine, st, &args)?;
            st.add_mount(
                path,
                MountSource::Secret {
                    secret,
                    mode: i(&args, "mode").unwrap_or(0o400) as u32,
                    owner,
                },
            );
        }
        "withMountedTemp" => {
            let path = path_arg(st, &args, "path")?;
            st.add_mount(
                path,
                MountSource::Temp {
                    size: i(&args, "size").filter(|s| *s > 0).map(|s| s as u64),
                },
            );
        }
        "withoutMount" => {
            let path = path_arg(st, &args, "path")?;
            st.mounts.retain(|(m, _)| *m != path);
        }
        _ => return Ok(false),
    }
    Ok(true)
}
