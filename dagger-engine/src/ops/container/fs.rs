//! A container's filesystem: new layers for file operations (`withDirectory`, `withNewFile`,
//! `withoutFile`, …), reads (`file`, `directory`, `rootfs`, `stat`, `exists`), and users resolved from the
//! container's `/etc/passwd` and `/etc/group`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ids::Digest;
use crate::model::tree::{Entry, FileEntry, Tree, normalize};
use crate::ops::container::state::{ContainerState, MountSource, expand, layers_dir, path_in};
use crate::ops::container::{change, container_of};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::{ContainerExists, ContainerField, ContainerWithDirectory, ExistsType};
use crate::ops::op::{Cx, Op, run};
use crate::ops::value::Evaluated;
use crate::worker::scratch::Scratch;
use crate::worker::snapshot::{self, SnapshotError};

pub(crate) fn empty_layer(store: &crate::store::Store) -> Result<PathBuf, OpError> {
    let p = layers_dir(store).join("empty");
    std::fs::create_dir_all(&p).map_err(|e| OpError::new(format!("cannot create {}: {e}", p.display())))?;
    Ok(p)
}

pub(crate) fn snap(e: SnapshotError) -> OpError {
    OpError::new(e.to_string())
}

/// Numeric owner from an `owner` argument (`uid`, `uid:gid`, `name`, `name:group`; empty for none), resolved
/// in the container's files.
pub(crate) fn owner_of(engine: &Engine, state: &ContainerState, owner: &str) -> Result<Option<(u32, u32)>, OpError> {
    if owner.is_empty() {
        return Ok(None);
    }
    let (u, g, _) = resolve_user(engine, state, owner)?;
    Ok(Some((u, g)))
}

/// Creates a new layer (named after the call that makes it) with `fill` writing into it.
pub(crate) fn new_layer(
    engine: &Engine,
    name: &Digest,
    fill: impl FnOnce(&Path) -> Result<(), SnapshotError>,
) -> Result<String, OpError> {
    let dir = layers_dir(&engine.store);
    let target = dir.join(name.as_str());
    if target.is_dir() {
        return Ok(name.to_string());
    }
    let tmp =
        Scratch::create(&engine.store, "layer").map_err(|e| OpError::new(format!("cannot create a layer: {e}")))?;
    fill(tmp.path()).map_err(snap)?;
    std::fs::create_dir_all(&dir).map_err(|e| OpError::new(format!("cannot create {}: {e}", dir.display())))?;
    // When another evaluation made it first (same call, same content), the scratch folder is removed.
    let _ = tmp.keep_as(&target);
    Ok(name.to_string())
}

/// The host directories of a container's layers, bottom first.
pub(crate) fn layer_paths(engine: &Engine, st: &ContainerState) -> Vec<PathBuf> {
    st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect()
}

/// Writes into the container at `path`: into the mount that holds it when there is one (a snapshot mount
/// gets a new tree), else into a new layer. The path is first resolved through the container's symlinks
/// (the last component only with `follow_last`), inside the container's root; `fill` gets the directory to
/// write under and the resolved path relative to it.
pub(crate) fn write_into(
    engine: &Engine,
    st: &mut ContainerState,
    d: &Digest,
    path: &str,
    follow_last: bool,
    fill: impl FnOnce(&Path, &str) -> Result<(), SnapshotError>,
) -> Result<(), OpError> {
    if let Some((m, MountSource::Dir { tree, .. }, rest)) = st.mount_at(path) {
        let rest = tree.resolve(&normalize(&rest)?, follow_last)?;
        let m = m.to_owned();
        // Apply the write to the mounted snapshot through a scratch directory.
        let scratch = Scratch::new(&engine.store, "mnt");
        let result = (|| {
            let Some((_, MountSource::Dir { tree, .. }, _)) = st.mount_at(path) else {
                return Ok(());
            };
            snapshot::write_tree(&engine.store, tree, scratch.path(), "", None).map_err(snap)?;
            fill(scratch.path(), &rest).map_err(snap)?;
            let new_tree = snapshot::read_tree(&engine.store, scratch.path()).map_err(snap)?;
            for (mp, src) in st.mounts.iter_mut() {
                if *mp == m
                    && let MountSource::Dir { tree, .. } = src
                {
                    *tree = new_tree.clone();
                }
            }
            Ok(())
        })();
        return result;
    }
    if st.mount_at(path).is_some() {
        return Err(OpError::new(format!(
            "cannot write `{path}`: it is inside a cache, secret or temporary mount"
        )));
    }
    let path = snapshot::resolve_in_layers(&layer_paths(engine, st), path, follow_last).map_err(snap)?;
    let path = path.as_str();
    // Several writes of one call (withFiles) share the call's layer.
    let name = d.to_string();
    let dir = layers_dir(&engine.store).join(&name);
    if st.layers.last() == Some(&name) {
        fill(&dir, path).map_err(snap)?;
    } else {
        // Each call's layer is built once; an existing one is the same content.
        let layer = new_layer(engine, d, |l| fill(l, path))?;
        st.layers.push(layer);
    }
    Ok(())
}

/// What to read out of a container.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// `file(path)`.
    File,
    /// `directory(path)` or `rootfs`.
    Directory,
    /// `stat(path)`.
    Stat {
        /// Whether a final symlink is followed.
        follow: bool,
    },
}

/// Reads a file, a directory or a `stat` out of a container at the absolute container path `path`.
pub(crate) async fn read(
    engine: &Arc<Engine>,
    st: &ContainerState,
    what: Read,
    path: String,
) -> Result<Evaluated, OpError> {
    // A path under a mount reads the mount's content.
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return match src {
            MountSource::Dir { tree, .. } => read_tree_path(tree, &rest, what, &path),
            MountSource::File { entry, .. } if rest.is_empty() => read_file_entry(entry, what, &path),
            _ => Err(OpError::new(format!(
                "cannot read `{path}`: paths inside cache, secret and temporary mounts cannot be read back"
            ))),
        };
    }
    let (engine, st) = (engine.clone(), st.clone());
    let follow = !matches!(what, Read::Stat { follow: false });
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine, &st)?;
        let host = snapshot::resolve_in_root(mounted.path(), &path, follow).map_err(snap)?;
        let out = read_host(&engine, &host, &path, what)?;
        mounted.unmount().map_err(snap)?;
        Ok(out)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// Reads `file`, `directory` or `stat` of the container path `path`, found at `host` in the mounted root.
fn read_host(engine: &Engine, host: &Path, path: &str, what: Read) -> Result<Evaluated, OpError> {
    let meta = std::fs::symlink_metadata(host)
        .map_err(|_| OpError::new(format!("no such file or directory in the container: `{path}`")))?;
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(match what {
        Read::File => {
            if !meta.is_file() {
                return Err(OpError::new(format!("`{path}` is not a regular file in the container")));
            }
            let (blob, size) = engine.store.put_blob_from_file(host)?;
            use std::os::unix::fs::PermissionsExt;
            Evaluated::File {
                name,
                entry: FileEntry {
                    mode: meta.permissions().mode() & 0o7777,
                    blob,
                    size,
                    mtime: None,
                },
            }
        }
        Read::Stat { .. } => {
            use std::os::unix::fs::PermissionsExt;
            let ft = meta.file_type();
            Evaluated::Stat {
                file_type: if ft.is_dir() {
                    "DIRECTORY"
                } else if ft.is_symlink() {
                    "SYMLINK"
                } else {
                    "REGULAR"
                }
                .into(),
                name: if path == "/" { "/".into() } else { name },
                permissions: meta.permissions().mode() & 0o7777,
                size: meta.len(),
            }
        }
        Read::Directory => {
            if !meta.is_dir() {
                return Err(OpError::new(format!("`{path}` is not a directory in the container")));
            }
            let tree = snapshot::read_tree(&engine.store, host).map_err(snap)?;
            Evaluated::Dir {
                tree,
                name: if path == "/" { "/".into() } else { format!("{name}/") },
            }
        }
    })
}

pub(crate) fn read_tree_path(tree: &Tree, rest: &str, what: Read, path: &str) -> Result<Evaluated, OpError> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    match what {
        Read::File => Ok(Evaluated::File {
            name,
            entry: tree.file(rest)?.clone(),
        }),
        Read::Stat { .. } => crate::ops::directory::stat_named(tree, rest, name)
            .map_err(|_| OpError::new(format!("no such file or directory: `{path}`"))),
        Read::Directory => Ok(Evaluated::Dir {
            tree: tree.subtree(rest)?,
            name: format!("{name}/"),
        }),
    }
}

pub(crate) fn read_file_entry(entry: &FileEntry, what: Read, path: &str) -> Result<Evaluated, OpError> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    match what {
        Read::File => Ok(Evaluated::File {
            name,
            entry: entry.clone(),
        }),
        Read::Stat { .. } => Ok(Evaluated::Stat {
            file_type: "REGULAR".into(),
            name,
            permissions: entry.mode,
            size: entry.size,
        }),
        Read::Directory => Err(OpError::new(format!("`{path}` is a mounted file, not a directory"))),
    }
}

/// Mounts the container's layers read-only at a scratch directory.
pub(crate) fn mount_readonly(engine: &Engine, st: &ContainerState) -> Result<snapshot::Mounted, OpError> {
    let layers: Vec<PathBuf> = st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect();
    let target = engine
        .store
        .root()
        .join("tmp")
        .join(format!("ro-{}", snapshot::unique()));
    engine
        .snapshotter()
        .assemble(&layers, None, &target, &empty_layer(&engine.store)?)
        .map_err(snap)
}

/// `exists(path, expectedType, doNotFollowSymlinks)`.
pub(crate) async fn exists(engine: &Arc<Engine>, st: &ContainerState, a: ContainerExists) -> Result<bool, OpError> {
    let follow = !a.do_not_follow_symlinks;
    let path = path_in(st, &a.path, a.expand)?;
    let expected = a.expected_type;
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return Ok(match src {
            MountSource::Dir { tree, .. } => crate::ops::directory::tree_has(tree, &rest, expected),
            MountSource::File { .. } => rest.is_empty() && matches!(expected, None | Some(ExistsType::RegularType)),
            _ => rest.is_empty() && matches!(expected, None | Some(ExistsType::DirectoryType)),
        });
    }
    let engine = engine.clone();
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine, &st)?;
        // A path through a file, or a link loop, names nothing.
        let host = match snapshot::resolve_in_root(mounted.path(), &path, follow) {
            Ok(h) => h,
            Err(snapshot::SnapshotError::NotADirectory(_) | snapshot::SnapshotError::Loop(_)) => return Ok(false),
            Err(e) => return Err(snap(e)),
        };
        let found = match std::fs::symlink_metadata(&host) {
            Err(_) => false,
            Ok(m) => match expected {
                None => true,
                Some(ExistsType::RegularType) => m.is_file(),
                Some(ExistsType::DirectoryType) => m.is_dir(),
                Some(ExistsType::SymlinkType) => m.file_type().is_symlink(),
            },
        };
        mounted.unmount().map_err(snap)?;
        Ok(found)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// A user resolved to IDs, with the home directory from `/etc/passwd`.
pub(crate) fn resolve_user(engine: &Engine, st: &ContainerState, user: &str) -> Result<(u32, u32, String), OpError> {
    if user.is_empty() {
        return Ok((0, 0, "/root".into()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    // Numeric IDs need no lookup, but the home directory does.
    let lookup = |file: &str| -> Vec<Vec<String>> {
        let Ok(m) = mount_readonly(engine, st) else {
            return Vec::new();
        };
        let text = snapshot::resolve_in_root(m.path(), file, true)
            .ok()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .collect()
    };
    let passwd = lookup("/etc/passwd");
    let entry = passwd
        .iter()
        .find(|f| f.first().map(String::as_str) == Some(u) || f.get(2).map(String::as_str) == Some(u));
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry
            .and_then(|f| f.get(2)?.parse().ok())
            .ok_or_else(|| OpError::new(format!("user `{u}` is not in the container's /etc/passwd")))?,
    };
    let home = entry
        .and_then(|f| f.get(5).cloned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".into());
    let gid = match g {
        None => entry.and_then(|f| f.get(3)?.parse().ok()).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("/etc/group")
                .iter()
                .find(|f| f.first().map(String::as_str) == Some(g))
                .and_then(|f| f.get(2)?.parse().ok())
                .ok_or_else(|| OpError::new(format!("group `{g}` is not in the container's /etc/group")))?,
        },
    };
    Ok((uid, gid, home))
}

/// The op of a filesystem field (`withRootfs`, `withDirectory`, `withFile`, `withNewFile`, `withFiles`,
/// `withSymlink`, `withoutFile`, `withoutDirectory`, `withoutFiles`, and the reads `file`, `directory`,
/// `rootfs`, `stat`); the field back when it is not one.
// The field is handed back by value when it is not this group's: once per call, not worth a box.
#[allow(clippy::result_large_err)]
pub(crate) fn op(field: ContainerField) -> Result<Option<Op>, ContainerField> {
    use ContainerField as F;
    Ok(match field {
        F::WithRootfs(a) => change(move |cx, st| {
            Box::pin(async move {
                let dir = cx.eval(&a.directory).await?;
                let Evaluated::Dir { tree, .. } = &*dir else {
                    return Err(OpError::new("`directory` is not a directory"));
                };
                let store = &cx.engine.store;
                let layer = new_layer(&cx.engine, &cx.digest, |l| {
                    snapshot::write_tree(store, tree, l, "", None)
                })?;
                st.layers = vec![layer];
                st.exec = None;
                Ok(())
            })
        }),
        F::WithDirectory(a) => change(move |cx, st| Box::pin(with_directory(cx, st, a))),
        F::WithSymlink(a) => change(move |cx, st| {
            Box::pin(async move {
                let link = path_in(st, &a.link_name, a.expand)?;
                let target = if a.expand { expand(&a.target, st) } else { a.target };
                let store = &cx.engine.store;
                write_into(&cx.engine, st, &cx.digest, &link, false, |l, at| {
                    snapshot::write_entry_at(store, l, at, &Entry::Symlink { target }, None)
                })
            })
        }),
        F::WithFile(a) => change(move |cx, st| {
            Box::pin(async move {
                let f = cx.eval(&a.source).await?;
                let Evaluated::File { entry, .. } = &*f else {
                    return Err(OpError::new("`source` is not a file"));
                };
                let mut entry = entry.clone();
                if let Some(p) = a.permissions {
                    entry.mode = p as u32;
                }
                let path = path_in(st, &a.path, a.expand)?;
                write_files(cx, st, &a.owner, vec![(path, entry)])
            })
        }),
        F::WithNewFile(a) => change(move |cx, st| {
            Box::pin(async move {
                let blob = cx.engine.store.put_blob(a.contents.as_bytes())?;
                let entry = FileEntry {
                    mode: a.permissions as u32,
                    blob,
                    size: a.contents.len() as u64,
                    mtime: None,
                };
                let path = path_in(st, &a.path, a.expand)?;
                write_files(cx, st, &a.owner, vec![(path, entry)])
            })
        }),
        F::WithFiles(a) => change(move |cx, st| {
            Box::pin(async move {
                let path = path_in(st, &a.path, a.expand)?;
                let files = crate::ops::file::source_files(&cx.engine, &a.sources, a.permissions)
                    .await?
                    .into_iter()
                    .map(|(name, entry)| (format!("{}/{name}", path.trim_end_matches('/')), entry))
                    .collect();
                write_files(cx, st, &a.owner, files)
            })
        }),
        F::WithoutFile(a) => change(move |cx, st| Box::pin(async move { remove(cx, st, &[a.path], a.expand) })),
        F::WithoutDirectory(a) => change(move |cx, st| Box::pin(async move { remove(cx, st, &[a.path], a.expand) })),
        F::WithoutFiles(a) => change(move |cx, st| Box::pin(async move { remove(cx, st, &a.paths, a.expand) })),
        F::File(a) => reading(Read::File, a.path, a.expand),
        F::Directory(a) => reading(Read::Directory, a.path, a.expand),
        F::Rootfs => reading(Read::Directory, "/".to_owned(), false),
        F::Stat(a) => reading(
            Read::Stat {
                follow: !a.do_not_follow_symlinks,
            },
            a.path,
            false,
        ),
        other => return Err(other),
    })
}

/// The op reading `what` at `path` (expanded when asked) out of the parent container.
fn reading(what: Read, path: String, expand: bool) -> Option<Op> {
    run(move |cx| async move {
        let st = container_of(&cx)?;
        let path = path_in(st, &path, expand)?;
        read(&cx.engine, st, what, path).await
    })
}

/// `withDirectory`: the source filtered, permissions and owner applied, written at the path.
async fn with_directory(cx: &Cx, st: &mut ContainerState, a: ContainerWithDirectory) -> Result<(), OpError> {
    let path = path_in(st, &a.path, a.expand)?;
    let dir = cx.eval(&a.source).await?;
    let Evaluated::Dir { tree, .. } = &*dir else {
        return Err(OpError::new("`source` is not a directory"));
    };
    let mut tree = tree.filter(&a.include, &a.exclude);
    if let Some(p) = a.permissions {
        tree.set_permissions(p as u32);
    }
    let owner = owner_of(&cx.engine, st, &a.owner)?;
    let store = &cx.engine.store;
    write_into(&cx.engine, st, &cx.digest, &path, true, |l, at| {
        snapshot::write_tree(store, &tree, l, at, owner)
    })
}

/// Writes files at absolute container paths, owned by `owner` when given.
fn write_files(cx: &Cx, st: &mut ContainerState, owner: &str, files: Vec<(String, FileEntry)>) -> Result<(), OpError> {
    let owner = owner_of(&cx.engine, st, owner)?;
    for (path, entry) in files {
        let store = cx.engine.store.clone();
        write_into(&cx.engine, st, &cx.digest, &path, true, move |l, at| {
            snapshot::write_entry_at(&store, l, at, &Entry::File(entry), owner)
        })?;
    }
    Ok(())
}

/// `withoutFile`, `withoutDirectory`, `withoutFiles`: a new layer of whiteouts. Parents resolve through the
/// container's symlinks; a final link is removed itself.
fn remove(cx: &Cx, st: &mut ContainerState, paths: &[String], expand: bool) -> Result<(), OpError> {
    let paths = paths
        .iter()
        .map(|p| path_in(st, p, expand))
        .collect::<Result<Vec<_>, _>>()?;
    let lower = layer_paths(&cx.engine, st);
    let paths = paths
        .iter()
        .map(|p| snapshot::resolve_in_layers(&lower, p, false).map_err(snap))
        .collect::<Result<Vec<_>, _>>()?;
    let layer = new_layer(&cx.engine, &cx.digest, |l| {
        for p in paths.iter().filter(|p| !p.is_empty()) {
            snapshot::whiteout(l, p)?;
        }
        Ok(())
    })?;
    st.layers.push(layer);
    Ok(())
}
