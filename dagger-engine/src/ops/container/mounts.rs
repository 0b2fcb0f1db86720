//! Mounts: `withMountedDirectory`, `withMountedFile`, `withMountedCache`, `withMountedSecret`,
//! `withMountedTemp` and `withoutMount` record what an exec mounts where; they are set up for each exec (see
//! [`crate::ops::container::exec`]), not written into the layers.

use crate::ops::container::change;
use crate::ops::container::state::{ContainerState, MountSource, SecretMount, path_in};
use crate::ops::container::users::owner_of;
use crate::ops::error::OpError;
use crate::ops::fields::{CacheSharingMode, ContainerField, ContainerWithMountedCache};
use crate::ops::op::{Cx, Op};
use crate::ops::value::Evaluated;

/// The op of a mount field; the field back when it is not one.
// The field is handed back by value when it is not this group's: once per call, not worth a box.
#[allow(clippy::result_large_err)]
pub(crate) fn op(field: ContainerField) -> Result<Option<Op>, ContainerField> {
    use ContainerField as F;
    Ok(match field {
        F::WithMountedDirectory(a) => change(move |cx, st| {
            Box::pin(async move {
                // A bad path is reported before the source is evaluated.
                path_in(st, &a.path, a.expand)?;
                let dir = cx.eval(&a.source).await?;
                let Evaluated::Dir { tree, .. } = &*dir else {
                    return Err(OpError::new("`source` is not a directory"));
                };
                let source = MountSource::Dir {
                    tree: tree.clone(),
                    read_only: a.read_only,
                    owner: owner_of(&cx.engine, st, &a.owner)?,
                };
                mount(st, &a.path, a.expand, source)
            })
        }),
        F::WithMountedFile(a) => change(move |cx, st| {
            Box::pin(async move {
                // A bad path is reported before the source is evaluated.
                path_in(st, &a.path, a.expand)?;
                let f = cx.eval(&a.source).await?;
                let Evaluated::File { entry, .. } = &*f else {
                    return Err(OpError::new("`source` is not a file"));
                };
                let source = MountSource::File {
                    entry: entry.clone(),
                    owner: owner_of(&cx.engine, st, &a.owner)?,
                };
                mount(st, &a.path, a.expand, source)
            })
        }),
        F::WithMountedCache(a) => change(move |cx, st| {
            Box::pin(async move {
                // A bad path is reported before the source is evaluated.
                path_in(st, &a.path, a.expand)?;
                let source = cache(cx, st, &a).await?;
                mount(st, &a.path, a.expand, source)
            })
        }),
        F::WithMountedSecret(a) => change(move |cx, st| {
            Box::pin(async move {
                // A bad path is reported before the source is evaluated.
                path_in(st, &a.path, a.expand)?;
                let mount = SecretMount {
                    path: path_in(st, &a.path, a.expand)?,
                    secret: a.source,
                    mode: a.mode as u32,
                    owner: owner_of(&cx.engine, st, &a.owner)?,
                };
                st.secret_mounts.push(mount);
                Ok(())
            })
        }),
        F::WithMountedTemp(a) => change(move |_, st| {
            Box::pin(async move {
                let size = a.size.filter(|s| *s > 0).map(|s| s as u64);
                mount(st, &a.path, a.expand, MountSource::Temp { size })
            })
        }),
        F::WithoutMount(a) => change(move |_, st| {
            Box::pin(async move {
                let path = path_in(st, &a.path, a.expand)?;
                st.unmount(&path);
                Ok(())
            })
        }),
        other => return Err(other),
    })
}

/// Adds `source` at the container path `path`.
fn mount(st: &mut ContainerState, path: &str, expand: bool, source: MountSource) -> Result<(), OpError> {
    let path = path_in(st, path, expand)?;
    st.add_mount(path, source);
    Ok(())
}

/// `withMountedCache`: the volume, what a new one starts with, its sharing mode and owner. What the mount does
/// not set (a sharing mode other than the default `SHARED`, a source, an owner) comes from the volume's own
/// `cacheVolume` arguments, as in Dagger.
async fn cache(cx: &Cx, st: &ContainerState, a: &ContainerWithMountedCache) -> Result<MountSource, OpError> {
    let cache = cx.eval(&a.cache).await?;
    let Evaluated::Cache {
        key,
        sharing,
        source,
        owner,
    } = &*cache
    else {
        return Err(OpError::new("`cache` is not a cache volume"));
    };
    let seed = match &a.source {
        Some(sd) => match &*cx.eval(sd).await? {
            Evaluated::Dir { tree, .. } => Some(tree.clone()),
            _ => return Err(OpError::new("`source` is not a directory")),
        },
        None => source.clone(),
    };
    let sharing = match a.sharing {
        CacheSharingMode::Shared => sharing.clone(),
        given => given.as_str().to_owned(),
    };
    let owner = if a.owner.is_empty() { owner } else { &a.owner };
    Ok(MountSource::Cache {
        key: key.clone(),
        sharing,
        seed,
        owner: owner_of(&cx.engine, st, owner)?,
    })
}
