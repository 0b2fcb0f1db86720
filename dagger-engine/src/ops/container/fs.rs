//! A container's filesystem: new layers for file operations (`withDirectory`, `withNewFile`,
//! `withoutFile`, …), reads (`file`, `directory`, `rootfs`, `stat`, `exists`), and users resolved from the
//! container's `/etc/passwd` and `/etc/group`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::ids::Digest;
use crate::model::tree::{Entry, FileEntry, PathError, Tree, normalize, split_wildcards};
use crate::ops::container::state::{ContainerState, MountSource, expand_if, layer_name, layers_dir, path_in};
use crate::ops::container::users::owner_of;
use crate::ops::container::{change, container_of};
use crate::ops::directory::dest_is_dir_hint;
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

/// Creates the layer of the call `d` (see [`layer_name`]) with `fill` writing into it; an existing one is the
/// same content.
pub(crate) fn new_layer(
    engine: &Engine,
    d: &Digest,
    fill: impl FnOnce(&Path) -> Result<(), SnapshotError>,
) -> Result<String, OpError> {
    let name = layer_name(d);
    let dir = layers_dir(&engine.store);
    let target = dir.join(&name);
    if target.is_dir() {
        return Ok(name);
    }
    let tmp =
        Scratch::create(&engine.store, "layer").map_err(|e| OpError::new(format!("cannot create a layer: {e}")))?;
    fill(tmp.path()).map_err(snap)?;
    std::fs::create_dir_all(&dir).map_err(|e| OpError::new(format!("cannot create {}: {e}", dir.display())))?;
    // When another evaluation made it first (same call, same content), the scratch folder is removed.
    let _ = tmp.keep_as(&target);
    Ok(name)
}

/// The host directories of a container's layers, bottom first.
pub(crate) fn layer_paths(engine: &Engine, st: &ContainerState) -> Vec<PathBuf> {
    st.layers.iter().map(|l| layers_dir(&engine.store).join(l)).collect()
}

/// Finds where a write at the container path `path` goes, as Dagger does: a path inside a cache or tmpfs mount
/// cannot be written (nor read), and a mount at exactly `path` is first unmounted, so the write lands below it
/// (with `only_files`, only a mounted file is; a directory written onto a mounted directory goes into it).
fn locate_for_write(st: &mut ContainerState, path: &str, only_files: bool) -> Result<(), OpError> {
    loop {
        let exact = match st.mount_at(path) {
            Some((_, MountSource::Cache { .. }, _)) => {
                return Err(OpError::new(format!("{path}: cannot retrieve path from cache")));
            }
            Some((_, MountSource::Temp { .. }, _)) => {
                return Err(OpError::new(format!("{path}: cannot retrieve path from tmpfs")));
            }
            Some((m, src, rest)) if rest.is_empty() && (!only_files || matches!(src, MountSource::File { .. })) => {
                m.to_owned()
            }
            _ => return Ok(()),
        };
        st.unmount(&exact);
    }
}

/// Writes into the container at `path`: into the mount that holds it when there is one (a snapshot mount
/// gets a new tree), else into a new layer. A mount at exactly `path` is unmounted first (see
/// [`locate_for_write`]). The path is then resolved through the container's symlinks (the last component
/// only with `follow_last`), inside the container's root; `fill` gets the directory to write under and the
/// resolved path relative to it.
pub(crate) fn write_into(
    engine: &Engine,
    st: &mut ContainerState,
    d: &Digest,
    path: &str,
    follow_last: bool,
    only_files: bool,
    fill: impl FnOnce(&Path, &str) -> Result<(), SnapshotError>,
) -> Result<(), OpError> {
    locate_for_write(st, path, only_files)?;
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
    match st.mount_at(path) {
        Some((_, MountSource::Cache { .. }, _)) => {
            return Err(OpError::new(format!("{path}: cannot retrieve path from cache")));
        }
        Some((_, MountSource::Temp { .. }, _)) => {
            return Err(OpError::new(format!("{path}: cannot retrieve path from tmpfs")));
        }
        Some((_, MountSource::File { .. }, _)) => return Err(PathError::Through(path.to_owned()).into()),
        _ => {}
    }
    let layers = layer_paths(engine, st);
    let path = snapshot::resolve_in_layers(&layers, path, follow_last).map_err(snap)?;
    let path = path.as_str();
    // Several writes of one call (withFiles) share the call's layer.
    let name = layer_name(d);
    let dir = layers_dir(&engine.store).join(&name);
    if st.layers.last() == Some(&name) {
        let lower = &layers[..layers.len() - 1];
        snapshot::copy_up_dirs(lower, &dir, path).map_err(snap)?;
        fill(&dir, path).map_err(snap)?;
    } else {
        // Each call's layer is built once; an existing one is the same content. The directories on the way
        // keep the mode and owner they have below.
        let layer = new_layer(engine, d, |l| {
            snapshot::copy_up_dirs(&layers, l, path)?;
            fill(l, path)
        })?;
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

/// Reads a file, a directory or a `stat` out of a container at the absolute container path `path`; errors
/// name the path as the user gave it (`given`), as Dagger's do.
pub(crate) async fn read(
    engine: &Arc<Engine>,
    st: &ContainerState,
    what: Read,
    path: String,
    given: &str,
) -> Result<Evaluated, OpError> {
    let follow = !matches!(what, Read::Stat { follow: false });
    // A path under a mount reads the mount's content.
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return match src {
            MountSource::Dir { tree, .. } => {
                let at = tree.resolve(&rest, follow).map_err(|e| e.at(given))?;
                read_tree_path(tree, &at, what, &path).map_err(|e| e.at(given).into())
            }
            MountSource::File { entry, .. } if rest.is_empty() => read_file_entry(entry, what, given),
            MountSource::File { .. } => Err(PathError::Through(given.to_owned()).into()),
            MountSource::Cache { .. } => Err(OpError::new(format!("{path}: cannot retrieve path from cache"))),
            MountSource::Temp { .. } => Err(OpError::new(format!("{path}: cannot retrieve path from tmpfs"))),
        };
    }
    let (engine, st, given) = (engine.clone(), st.clone(), given.to_owned());
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine, &st)?;
        let host = snapshot::resolve_in_root(mounted.path(), &path, follow).map_err(|e| match e {
            SnapshotError::NotADirectory(_) => PathError::Through(given.clone()).into(),
            SnapshotError::NotFound(_) => PathError::NotFound(given.clone()).into(),
            other => snap(other),
        })?;
        let out = read_host(&engine, &host, &path, &given, what)?;
        mounted.unmount().map_err(snap)?;
        Ok(out)
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// Reads `file`, `directory` or `stat` of the container path `path` (given as `given`), found at `host` in
/// the mounted root.
fn read_host(engine: &Engine, host: &Path, path: &str, given: &str, what: Read) -> Result<Evaluated, OpError> {
    let meta = std::fs::symlink_metadata(host).map_err(|_| PathError::NotFound(given.to_owned()))?;
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(match what {
        Read::File => {
            if meta.is_dir() {
                return Err(PathError::NotAFile(given.to_owned()).into());
            }
            if !meta.is_file() {
                return Err(OpError::new(format!("path {given} is not a regular file")));
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
                return Err(PathError::NotADirectory(given.to_owned()).into());
            }
            let tree = snapshot::read_tree(&engine.store, host).map_err(snap)?;
            Evaluated::Dir {
                tree,
                name: if path == "/" { "/".into() } else { format!("{name}/") },
            }
        }
    })
}

/// Reads `what` at `at` (resolved) in a mounted directory's tree, named after the container path `path`.
pub(crate) fn read_tree_path(tree: &Tree, at: &str, what: Read, path: &str) -> Result<Evaluated, PathError> {
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(match what {
        Read::File => Evaluated::File {
            name,
            entry: tree.file(at)?.clone(),
        },
        Read::Stat { .. } => crate::ops::directory::stat_named(tree, at, name)?,
        Read::Directory => Evaluated::Dir {
            tree: tree.subtree(at)?,
            name: format!("{name}/"),
        },
    })
}

/// Reads `what` of a mounted file, the container path given as `given`.
pub(crate) fn read_file_entry(entry: &FileEntry, what: Read, given: &str) -> Result<Evaluated, OpError> {
    let name = given.rsplit('/').next().unwrap_or_default().to_owned();
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
        Read::Directory => Err(PathError::NotADirectory(given.to_owned()).into()),
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
    let expected = a.expected_type;
    let follow = crate::ops::directory::follows_links(a.do_not_follow_symlinks, expected);
    let path = path_in(st, &a.path, a.expand)?;
    if let Some((_, src, rest)) = st.mount_at(&path) {
        let rest = normalize(&rest)?;
        return Ok(match src {
            // Inside a mounted directory, its own symlinks are followed as in the directory.
            MountSource::Dir { tree, .. } => tree
                .resolve(&rest, follow)
                .is_ok_and(|at| crate::ops::directory::tree_has(tree, &at, expected)),
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
                let target = expand_if(&a.target, st, a.expand)?;
                let store = &cx.engine.store;
                write_into(&cx.engine, st, &cx.digest, &link, false, false, |l, at| {
                    snapshot::write_entry_at(store, l, at, &Entry::Symlink { target }, None)
                })
            })
        }),
        F::WithFile(a) => change(move |cx, st| {
            Box::pin(async move {
                // A bad path is reported before the source is evaluated.
                let raw = expand_if(&a.path, st, a.expand)?;
                let path = st.abs(&raw)?;
                let f = cx.eval(&a.source).await?;
                let Evaluated::File { name, entry } = &*f else {
                    return Err(OpError::new("`source` is not a file"));
                };
                let mut entry = entry.clone();
                if let Some(p) = a.permissions {
                    entry.mode = p as u32;
                }
                let path = file_target(&cx.engine, st, path, name, dest_is_dir_hint(&raw)).await?;
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
                // As Dagger does it: a file named after the path's last component, put with `withFile` (so an
                // existing directory at the path gets it inside).
                let raw = expand_if(&a.path, st, a.expand)?;
                let path = st.abs(&raw)?;
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                let path = file_target(&cx.engine, st, path, &name, false).await?;
                write_files(cx, st, &a.owner, vec![(path, entry)])
            })
        }),
        F::WithFiles(a) => change(move |cx, st| {
            Box::pin(async move {
                let path = path_in(st, &a.path, a.expand)?;
                let mut files = Vec::new();
                for (name, entry) in crate::ops::file::source_files(&cx.engine, &a.sources, a.permissions).await? {
                    // Each file goes where `withFile(path/name)` would put it.
                    let at = format!("{}/{name}", path.trim_end_matches('/'));
                    files.push((file_target(&cx.engine, st, at, &name, false).await?, entry));
                }
                write_files(cx, st, &a.owner, files)
            })
        }),
        F::WithoutFile(a) => change(move |cx, st| Box::pin(remove(cx, st, vec![a.path], a.expand))),
        F::WithoutDirectory(a) => change(move |cx, st| Box::pin(remove(cx, st, vec![a.path], a.expand))),
        F::WithoutFiles(a) => change(move |cx, st| Box::pin(remove(cx, st, a.paths, a.expand))),
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
fn reading(what: Read, path: String, expand_it: bool) -> Option<Op> {
    run(move |cx| async move {
        let st = container_of(&cx)?;
        let given = expand_if(&path, st, expand_it)?;
        let abs = path_in(st, &given, false)?;
        read(&cx.engine, st, what, abs, &given).await
    })
}

/// `withDirectory`: the source filtered, permissions and owner applied, written at the path.
async fn with_directory(cx: &Cx, st: &mut ContainerState, a: ContainerWithDirectory) -> Result<(), OpError> {
    let path = path_in(st, &a.path, a.expand)?;
    let dir = cx.eval(&a.source).await?;
    let Evaluated::Dir { tree, .. } = &*dir else {
        return Err(OpError::new("`source` is not a directory"));
    };
    let mut tree = crate::ops::directory::filtered(&cx.engine.store, tree, &a.include, &a.exclude, a.gitignore)?;
    if let Some(p) = a.permissions {
        tree.set_permissions(p as u32);
    }
    let owner = owner_of(&cx.engine, st, &a.owner)?;
    let store = &cx.engine.store;
    write_into(&cx.engine, st, &cx.digest, &path, true, true, |l, at| {
        snapshot::write_tree(store, &tree, l, at, owner)
    })
}

/// Writes files at absolute container paths, owned by `owner` when given.
fn write_files(cx: &Cx, st: &mut ContainerState, owner: &str, files: Vec<(String, FileEntry)>) -> Result<(), OpError> {
    let owner = owner_of(&cx.engine, st, owner)?;
    for (path, entry) in files {
        let store = cx.engine.store.clone();
        write_into(&cx.engine, st, &cx.digest, &path, true, false, move |l, at| {
            snapshot::write_entry_at(&store, l, at, &Entry::File(entry), owner)
        })?;
    }
    Ok(())
}

/// Where `withFile` puts the file `name` given the absolute container path `path`: inside it, under the file's
/// own name, when it is an existing directory (of the image, a layer or a mounted directory) or `into_dir`
/// (the path ended with `/`); else at the path itself.
async fn file_target(
    engine: &Arc<Engine>,
    st: &mut ContainerState,
    path: String,
    name: &str,
    into_dir: bool,
) -> Result<String, OpError> {
    // A mount at the path itself is unmounted first, so what is below it decides.
    locate_for_write(st, &path, false)?;
    let is_dir = into_dir
        || matches!(
            read(engine, st, Read::Stat { follow: true }, path.clone(), &path).await,
            Ok(Evaluated::Stat { ref file_type, .. }) if file_type == "DIRECTORY"
        );
    Ok(if is_dir {
        format!("{}/{name}", path.trim_end_matches('/'))
    } else {
        path
    })
}

/// The container paths a removal pattern (an absolute path holding a `*`, see [`split_wildcards`]) matches:
/// in the mounted directory holding it, or in the container's layers. No match is an empty list.
async fn wildcard_matches(
    engine: &Arc<Engine>,
    st: &ContainerState,
    dir: String,
    pattern: Vec<String>,
) -> Result<Vec<String>, OpError> {
    let missing = |dir: &str| OpError::from(PathError::NotFound(dir.to_owned()));
    if let Some((m, src, rest)) = st.mount_at(&dir) {
        return match src {
            MountSource::Dir { tree, .. } => {
                let base = tree.resolve(&normalize(&rest)?, true)?;
                if !base.is_empty() && !tree.entries.contains_key(&base) {
                    return Err(missing(&dir));
                }
                Ok(tree
                    .wildcard_matches(&base, &pattern)
                    .into_iter()
                    .map(|p| format!("{}/{p}", m.trim_end_matches('/')))
                    .collect())
            }
            MountSource::Cache { .. } => Err(OpError::new(format!("{dir}: cannot retrieve path from cache"))),
            MountSource::Temp { .. } => Err(OpError::new(format!("{dir}: cannot retrieve path from tmpfs"))),
            MountSource::File { .. } => Ok(Vec::new()),
        };
    }
    let (engine, st) = (engine.clone(), st.clone());
    tokio::task::spawn_blocking(move || {
        let mounted = mount_readonly(&engine, &st)?;
        let found = (|| {
            let base = match snapshot::resolve_in_root(mounted.path(), &dir, true) {
                Ok(b) => b,
                Err(SnapshotError::NotADirectory(_)) => return Ok(Vec::new()),
                Err(e) => return Err(snap(e)),
            };
            // As in Dagger, a pattern whose directory does not exist is an error (no match in an existing
            // directory is none).
            if std::fs::symlink_metadata(&base).is_err() {
                return Err(missing(&dir));
            }
            // Where the pattern's directory really is in the container, its links followed.
            let real = base.strip_prefix(mounted.path()).unwrap_or(Path::new("")).to_owned();
            let mut found = Vec::new();
            walk_matching(&base, &pattern, &mut Vec::new(), &mut found);
            Ok(found
                .into_iter()
                .map(|rel| format!("/{}", real.join(rel).to_string_lossy()))
                .collect())
        })();
        mounted.unmount().map_err(snap)?;
        found
    })
    .await
    .map_err(|e| OpError::new(format!("internal error: {e}")))?
}

/// Collects, below the host directory `dir`, the relative paths matching `pattern` segment for segment; links
/// are not followed, and a directory is looked into only while its path still matches.
fn walk_matching(dir: &Path, pattern: &[String], rel: &mut Vec<String>, found: &mut Vec<String>) {
    let Ok(read) = std::fs::read_dir(dir) else { return };
    let mut names: Vec<(String, bool)> = read
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.file_type().is_ok_and(|t| t.is_dir()),
            )
        })
        .collect();
    names.sort();
    let depth = rel.len();
    for (name, is_dir) in names {
        if !crate::model::tree::match_one(pattern[depth].as_bytes(), name.as_bytes()) {
            continue;
        }
        rel.push(name);
        if depth + 1 == pattern.len() {
            found.push(rel.join("/"));
        } else if is_dir {
            walk_matching(&dir.join(&rel[depth]), pattern, rel, found);
        }
        rel.pop();
    }
}

/// `withoutFile`, `withoutDirectory`, `withoutFiles`. A path holding a `*` is a pattern: everything it matches
/// is removed, and no match is no error. A path that is a mount point is unmounted (with the mounts below
/// it), then removed from the container's files; a path inside a mounted directory is removed from that
/// mount. The rest becomes a new layer of whiteouts: parents resolve through the container's symlinks, a final
/// link is removed itself.
async fn remove(cx: &Cx, st: &mut ContainerState, paths: Vec<String>, expand: bool) -> Result<(), OpError> {
    let mut targets = Vec::new();
    for p in &paths {
        let path = path_in(st, p, expand)?;
        match split_wildcards(&path) {
            Some((dir, pattern)) => targets.extend(wildcard_matches(&cx.engine, st, dir, pattern).await?),
            None => targets.push(path),
        }
    }
    let mut paths = Vec::new();
    for path in targets {
        // As Dagger does: a mount at the path itself is unmounted (and the path removed from what is below
        // it), a path inside a mounted directory is removed from that mount.
        loop {
            let (m, is_dir, rest) = match st.mount_at(&path) {
                None => {
                    paths.push(path);
                    break;
                }
                Some((_, MountSource::Cache { .. }, _)) => {
                    return Err(OpError::new(format!("{path}: cannot retrieve path from cache")));
                }
                Some((_, MountSource::Temp { .. }, _)) => {
                    return Err(OpError::new(format!("{path}: cannot retrieve path from tmpfs")));
                }
                Some((m, src, rest)) => (m.to_owned(), matches!(src, MountSource::Dir { .. }), rest),
            };
            if rest.is_empty() {
                st.unmount(&m);
                continue;
            }
            if is_dir {
                for (mp, src) in st.mounts.iter_mut() {
                    if *mp == m
                        && let MountSource::Dir { tree, .. } = src
                    {
                        tree.remove_path(&normalize(&rest)?)?;
                    }
                }
            }
            break;
        }
    }
    if paths.is_empty() {
        return Ok(());
    }
    let lower = layer_paths(&cx.engine, st);
    let paths = paths
        .iter()
        .map(|p| snapshot::resolve_in_layers(&lower, p, false).map_err(snap))
        .collect::<Result<Vec<_>, _>>()?;
    let layer = new_layer(&cx.engine, &cx.digest, |l| {
        for p in paths.iter().filter(|p| !p.is_empty()) {
            // The whiteout's parents keep the mode and owner they have below.
            let parent = p.rsplit_once('/').map_or("", |(parent, _)| parent);
            snapshot::copy_up_dirs(&lower, l, parent)?;
            snapshot::whiteout(l, p)?;
        }
        Ok(())
    })?;
    st.layers.push(layer);
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Container file operations on layers and mounts (no exec, so no runtime); reading back mounts the layers
    //! (overlayfs as root, else copies).

    use serde_json::{Value, json};

    use super::*;
    use crate::ops::fields::{DirectoryField, FileField};
    use crate::ops::op::testing::{self, empty_dir, engine, object};

    /// Runs `Type.field(args)` on `parent`, the type being the parent's.
    async fn apply(e: &Arc<Engine>, parent: Evaluated, field: &str, args: Value) -> Result<Evaluated, OpError> {
        let args = testing::args(args);
        let op = match &parent {
            Evaluated::Dir { .. } => crate::ops::directory::op(DirectoryField::parse(field, &args).expect("a field")),
            Evaluated::File { .. } => crate::ops::file::op(FileField::parse(field, &args).expect("a field")),
            _ => crate::ops::container::op(ContainerField::parse(field, &args).expect("a field")),
        };
        testing::apply(e, parent, op).await
    }

    /// Applies fields in turn, starting from `start`.
    async fn chain(e: &Arc<Engine>, start: Evaluated, fields: &[(&str, Value)]) -> Evaluated {
        let mut v = start;
        for (field, args) in fields {
            v = apply(e, v, field, args.clone())
                .await
                .unwrap_or_else(|err| panic!("{field}({args}): {}", err.message));
        }
        v
    }

    /// A container on an empty root file system holding `/tmp`, with `/workdir` as its workdir and the files
    /// of Dagger's `TestWithoutPath`.
    async fn base(e: &Arc<Engine>) -> Evaluated {
        let root = object(
            e,
            // `/tmp` as images have it (1777), so the tests also run as an ordinary user: a new layer copies
            // the mode of the directories it writes into.
            chain(
                e,
                empty_dir(),
                &[("withNewDirectory", json!({ "path": "tmp", "permissions": 0o1777 }))],
            )
            .await,
        );
        let mut fields = vec![
            ("withRootfs", json!({ "directory": { "$id": root } })),
            ("withWorkdir", json!({ "path": "/workdir" })),
        ];
        for p in ["xyz", "moo", "foo", "bar/man", "bat/man", "/ual"] {
            fields.push(("withNewFile", json!({ "path": p, "contents": "" })));
        }
        chain(e, crate::ops::container::empty(None), &fields).await
    }

    /// The entries of the container directory `path`.
    async fn entries(e: &Arc<Engine>, c: &Evaluated, path: &str) -> Vec<String> {
        let d = apply(e, c.clone(), "directory", json!({ "path": path }))
            .await
            .unwrap_or_else(|err| panic!("directory({path}): {}", err.message));
        d.as_dir().expect("a directory").0.list("").expect("list")
    }

    /// A file object named `name` holding `contents`.
    async fn file(e: &Arc<Engine>, name: &str, contents: &str) -> Digest {
        let d = chain(
            e,
            empty_dir(),
            &[("withNewFile", json!({ "path": name, "contents": contents }))],
        )
        .await;
        object(e, apply(e, d, "file", json!({ "path": name })).await.expect("file"))
    }

    async fn contents(e: &Arc<Engine>, c: &Evaluated, path: &str) -> String {
        let f = apply(e, c.clone(), "file", json!({ "path": path }))
            .await
            .unwrap_or_else(|err| panic!("file({path}): {}", err.message));
        let blob = &f.as_file().expect("a file").1.blob;
        String::from_utf8(e.store.get_blob(blob).expect("blob")).expect("utf-8")
    }

    #[tokio::test]
    async fn removal_paths_with_a_star_are_patterns_in_layers_and_mounts() {
        // Ported from Dagger's `TestWithoutPath` and `TestWithoutPaths` (container_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let c = base(&e).await;
        assert_eq!(entries(&e, &c, ".").await, ["bar/", "bat/", "foo", "moo", "xyz"]);
        let after = |fields: Vec<(&'static str, Value)>| {
            let (e, c) = (e.clone(), c.clone());
            async move { chain(&e, c, &fields).await }
        };
        let v = after(vec![("withoutFile", json!({ "path": "not-exists" }))]).await;
        assert_eq!(entries(&e, &v, ".").await, ["bar/", "bat/", "foo", "moo", "xyz"]);
        let v = after(vec![("withoutFile", json!({ "path": "*oo" }))]).await;
        assert_eq!(entries(&e, &v, ".").await, ["bar/", "bat/", "xyz"]);
        let v = after(vec![("withoutFiles", json!({ "paths": ["xyz", "*oo", "x*"] }))]).await;
        assert_eq!(entries(&e, &v, ".").await, ["bar/", "bat/"]);
        // As in Dagger, a pattern whose directory does not exist is an error (no match in an existing one is
        // none).
        let err = apply(&e, c.clone(), "withoutFiles", json!({ "paths": ["*oo", "nothing/*"] }))
            .await
            .expect_err("a missing directory");
        assert_eq!(err.message, "/workdir/nothing: no such file or directory");
        let v = after(vec![("withoutDirectory", json!({ "path": "ba*" }))]).await;
        assert_eq!(entries(&e, &v, ".").await, ["foo", "moo", "xyz"]);
        let v = after(vec![("withoutFiles", json!({ "paths": ["/ual", "*/man"] }))]).await;
        assert_eq!(entries(&e, &v, "/").await, ["tmp/", "workdir/"]);
        assert_eq!(entries(&e, &v, ".").await, ["bar/", "bat/", "foo", "moo", "xyz"]);

        // Inside a mounted directory, the mount's content.
        let src = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[
                    ("withNewFile", json!({ "path": "a.txt", "contents": "" })),
                    ("withNewFile", json!({ "path": "b.md", "contents": "" })),
                ],
            )
            .await,
        );
        let v = after(vec![
            (
                "withMountedDirectory",
                json!({ "path": "/mnt", "source": { "$id": src } }),
            ),
            ("withoutFile", json!({ "path": "/mnt/*.txt" })),
        ])
        .await;
        assert_eq!(entries(&e, &v, "/mnt").await, ["b.md"]);

        // A mount point itself: unmounted, then removed below (Dagger's `TestWithoutFileOnMountedFile`).
        let (f1, f2) = (file(&e, "f", "1").await, file(&e, "f", "2").await);
        let v = after(vec![
            ("withFile", json!({ "path": "/mnt/f", "source": { "$id": f1 } })),
            ("withMountedFile", json!({ "path": "/mnt/f", "source": { "$id": f2 } })),
            ("withoutFile", json!({ "path": "/mnt/f" })),
        ])
        .await;
        assert_eq!(entries(&e, &v, "/mnt").await, Vec::<String>::new());
        let Evaluated::Container(st) = &v else {
            panic!("a container")
        };
        assert!(st.mounts.is_empty(), "{:?}", st.mounts);
    }

    #[tokio::test]
    async fn with_file_into_an_existing_directory_keeps_the_file_name() {
        // Ported from Dagger's `TestWithFile`, `TestWithFiles` and `TestWithFilesNested` (container_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let c = base(&e).await;
        let f = file(&e, "some-file", "some-content").await;
        let g = file(&e, "second-file", "two").await;
        let after = |fields: Vec<(&'static str, Value)>| {
            let (e, c) = (e.clone(), c.clone());
            async move { chain(&e, c, &fields).await }
        };
        let v = after(vec![(
            "withFile",
            json!({ "path": "target-file", "source": { "$id": f } }),
        )])
        .await;
        assert_eq!(contents(&e, &v, "/workdir/target-file").await, "some-content");
        let v = after(vec![("withFile", json!({ "path": "/tmp", "source": { "$id": f } }))]).await;
        assert_eq!(entries(&e, &v, "/tmp").await, ["some-file"]);
        for root in ["", ".", "/workdir/"] {
            let v = after(vec![("withFile", json!({ "path": root, "source": { "$id": f } }))]).await;
            assert_eq!(contents(&e, &v, "/workdir/some-file").await, "some-content", "{root:?}");
        }
        let v = after(vec![("withFile", json!({ "path": "new/", "source": { "$id": f } }))]).await;
        assert_eq!(entries(&e, &v, "/workdir/new").await, ["some-file"]);
        for at in ["myfiles", "myfiles/", "/tmp"] {
            let v = after(vec![(
                "withFiles",
                json!({ "path": at, "sources": [{ "$id": f }, { "$id": g }] }),
            )])
            .await;
            let dir = if at == "/tmp" {
                "/tmp".to_owned()
            } else {
                "/workdir/myfiles".to_owned()
            };
            assert_eq!(
                entries(&e, &v, &dir).await,
                ["second-file", "some-file"],
                "withFiles at {at}"
            );
        }
        // Into a mounted directory too (searchable, so the test also runs as an ordinary user: the schema's
        // default mode for a new directory, 0644, lets only root write into it outside a user namespace).
        let src = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[("withNewDirectory", json!({ "path": "d", "permissions": 0o755 }))],
            )
            .await,
        );
        let v = after(vec![
            (
                "withMountedDirectory",
                json!({ "path": "/mnt", "source": { "$id": src } }),
            ),
            ("withFile", json!({ "path": "/mnt/d", "source": { "$id": f } })),
        ])
        .await;
        assert_eq!(entries(&e, &v, "/mnt/d").await, ["some-file"]);
    }

    #[tokio::test]
    async fn exists_follows_links_except_for_the_symlink_check() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let src = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[
                    ("withNewFile", json!({ "path": "real.txt", "contents": "" })),
                    ("withSymlink", json!({ "target": "real.txt", "linkName": "link" })),
                    ("withSymlink", json!({ "target": "/real.txt", "linkName": "abs" })),
                ],
            )
            .await,
        );
        let c = chain(
            &e,
            base(&e).await,
            &[
                (
                    "withSymlink",
                    json!({ "target": "/workdir/foo", "linkName": "/foo-link" }),
                ),
                ("withSymlink", json!({ "target": "/gone", "linkName": "/dangling" })),
                (
                    "withMountedDirectory",
                    json!({ "path": "/mnt", "source": { "$id": src } }),
                ),
            ],
        )
        .await;
        let Evaluated::Container(st) = &c else {
            panic!("a container")
        };
        for (path, ty, no_follow, want) in [
            ("/foo-link", Some("REGULAR_TYPE"), false, true),
            ("/foo-link", Some("SYMLINK_TYPE"), false, true),
            ("/foo-link", Some("REGULAR_TYPE"), true, false),
            ("/dangling", None, false, false),
            ("/dangling", Some("SYMLINK_TYPE"), false, true),
            ("/dangling", None, true, true),
            ("/mnt/link", Some("REGULAR_TYPE"), false, true),
            ("/mnt/abs", Some("REGULAR_TYPE"), false, true),
            ("/mnt/link", Some("SYMLINK_TYPE"), false, true),
            ("/mnt/link", Some("REGULAR_TYPE"), true, false),
            ("bar", Some("DIRECTORY_TYPE"), false, true),
        ] {
            let mut args = json!({ "path": path, "doNotFollowSymlinks": no_follow });
            if let Some(ty) = ty {
                args["expectedType"] = json!(ty);
            }
            let a = crate::ops::fields::ContainerExists::parse(args.as_object().expect("object")).expect("args");
            let found = exists(&e, st, a).await.expect("exists");
            assert_eq!(found, want, "exists({path}, {ty:?}, doNotFollow {no_follow})");
        }
    }

    /// The permission bits `stat` reports for a container path.
    async fn mode(e: &Arc<Engine>, c: &Evaluated, path: &str) -> u32 {
        match apply(e, c.clone(), "stat", json!({ "path": path })).await {
            Ok(Evaluated::Stat { permissions, .. }) => permissions,
            Ok(_) => panic!("stat({path}) is not a stat"),
            Err(err) => panic!("stat({path}): {}", err.message),
        }
    }

    #[tokio::test]
    async fn directories_keep_their_own_mode_and_written_layers_keep_their_parents() {
        // A directory's root mode goes with it (`directory(path)`, copied to a new path, mounted); a copy into an
        // existing directory, and files written below one, leave that directory's mode as it was.
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let root = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[("withNewDirectory", json!({ "path": "tmp", "permissions": 0o1777 }))],
            )
            .await,
        );
        let c = chain(
            &e,
            crate::ops::container::empty(None),
            &[("withRootfs", json!({ "directory": { "$id": root } }))],
        )
        .await;
        let private = apply(
            &e,
            chain(
                &e,
                empty_dir(),
                &[
                    ("withNewDirectory", json!({ "path": "p", "permissions": 0o700 })),
                    ("withNewFile", json!({ "path": "p/f", "contents": "x" })),
                ],
            )
            .await,
            "directory",
            json!({ "path": "p" }),
        )
        .await
        .expect("directory");
        assert_eq!(private.as_dir().expect("dir").0.root_mode(), 0o700);
        let private = object(&e, private);
        let f = file(&e, "x", "x").await;
        let c = chain(
            &e,
            c,
            &[
                (
                    "withDirectory",
                    json!({ "path": "/copied", "source": { "$id": private } }),
                ),
                ("withDirectory", json!({ "path": "/tmp", "source": { "$id": private } })),
                ("withNewFile", json!({ "path": "/tmp/new/deep", "contents": "" })),
                ("withFile", json!({ "path": "/tmp/g", "source": { "$id": f } })),
                (
                    "withMountedDirectory",
                    json!({ "path": "/mnt", "source": { "$id": private } }),
                ),
            ],
        )
        .await;
        assert_eq!(
            mode(&e, &c, "/copied").await,
            0o700,
            "a new path takes the copied directory's mode"
        );
        assert_eq!(
            mode(&e, &c, "/tmp").await,
            0o1777,
            "an existing directory keeps its mode"
        );
        assert_eq!(mode(&e, &c, "/tmp/new").await, 0o755, "a directory made on the way");
        assert_eq!(
            mode(&e, &c, "/mnt").await,
            0o700,
            "a mounted directory shows its own mode"
        );
        let c = chain(&e, c, &[("withoutFile", json!({ "path": "/tmp/g" }))]).await;
        assert_eq!(
            mode(&e, &c, "/tmp").await,
            0o1777,
            "a removal leaves its directory's mode"
        );
        // Read back out of the container, the directory still has its mode.
        let back = apply(&e, c, "directory", json!({ "path": "/copied" }))
            .await
            .expect("directory");
        assert_eq!(back.as_dir().expect("dir").0.root_mode(), 0o700);
    }

    #[tokio::test]
    async fn reading_errors_use_daggers_wording() {
        // Ported from Dagger's `TestDirectoryErrors` and `TestFileErrors` (container_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let src = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[("withNewFile", json!({ "path": "some-file", "contents": "x" }))],
            )
            .await,
        );
        let cache = object(&e, Evaluated::cache("k"));
        let c = chain(
            &e,
            base(&e).await,
            &[
                (
                    "withMountedDirectory",
                    json!({ "path": "/mnt/dir", "source": { "$id": src } }),
                ),
                ("withMountedTemp", json!({ "path": "/mnt/tmp" })),
                (
                    "withMountedCache",
                    json!({ "path": "/mnt/cache", "cache": { "$id": cache } }),
                ),
            ],
        )
        .await;
        let err = |field: &'static str, path: &'static str| {
            let (e, c) = (e.clone(), c.clone());
            async move {
                apply(&e, c, field, json!({ "path": path }))
                    .await
                    .expect_err("an error")
                    .message
            }
        };
        assert_eq!(
            err("directory", "/mnt/dir/some-file").await,
            "path /mnt/dir/some-file is a file, not a directory"
        );
        assert_eq!(
            err("file", "/mnt/dir").await,
            "path /mnt/dir is a directory, not a file"
        );
        assert_eq!(
            err("file", "/mnt/dir/bogus").await,
            "/mnt/dir/bogus: no such file or directory"
        );
        assert_eq!(
            err("directory", "/mnt/tmp/bogus").await,
            "/mnt/tmp/bogus: cannot retrieve path from tmpfs"
        );
        assert_eq!(
            err("file", "/mnt/cache/bogus").await,
            "/mnt/cache/bogus: cannot retrieve path from cache"
        );
        assert_eq!(err("directory", "/bar").await, "/bar: no such file or directory");
        assert_eq!(err("file", "bar").await, "path bar is a directory, not a file");
        assert_eq!(err("directory", "foo").await, "path foo is a file, not a directory");
        assert_eq!(err("file", "nope").await, "nope: no such file or directory");
        let f = file(&e, "f", "1").await;
        let write = apply(
            &e,
            c,
            "withFile",
            json!({ "path": "/mnt/cache/f", "source": { "$id": f } }),
        )
        .await
        .expect_err("a cache is not written through");
        assert_eq!(write.message, "/mnt/cache/f: cannot retrieve path from cache");
    }

    #[tokio::test]
    async fn writes_onto_a_mount_point_unmount_it_first() {
        // Ported from Dagger's `TestWithFileOnMountedFile` (container_test.go): a file written at a mounted
        // file's path lands in what is below it (here the mounted directory), and so does one written at a
        // mounted directory's own path.
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let d = object(
            &e,
            chain(
                &e,
                empty_dir(),
                &[
                    ("withNewFile", json!({ "path": "f1", "contents": "1" })),
                    ("withNewFile", json!({ "path": "f2", "contents": "2" })),
                ],
            )
            .await,
        );
        let (f3, f4) = (file(&e, "f3", "3").await, file(&e, "f4", "4").await);
        let c = chain(
            &e,
            base(&e).await,
            &[
                (
                    "withMountedDirectory",
                    json!({ "path": "/mnt", "source": { "$id": d } }),
                ),
                ("withMountedFile", json!({ "path": "/mnt/f2", "source": { "$id": f3 } })),
            ],
        )
        .await;
        assert_eq!(contents(&e, &c, "/mnt/f1").await, "1");
        assert_eq!(contents(&e, &c, "/mnt/f2").await, "3");
        let v = chain(
            &e,
            c.clone(),
            &[("withFile", json!({ "path": "/mnt/f2", "source": { "$id": f4 } }))],
        )
        .await;
        assert_eq!(contents(&e, &v, "/mnt/f2").await, "4");
        let Evaluated::Container(st) = &v else {
            panic!("a container")
        };
        assert_eq!(st.mounts.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["/mnt"]);
        // At the mounted directory's own path: unmounted, then the file goes where the path is below (a new
        // file, as the root file system has no `/mnt`).
        let v = chain(
            &e,
            c,
            &[("withFile", json!({ "path": "/mnt", "source": { "$id": f4 } }))],
        )
        .await;
        assert_eq!(contents(&e, &v, "/mnt").await, "4");
        let Evaluated::Container(st) = &v else {
            panic!("a container")
        };
        assert_eq!(
            st.mounts.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["/mnt/f2"]
        );
    }

    #[tokio::test]
    async fn a_new_file_onto_an_existing_directory_goes_inside_it() {
        // As Dagger's `withNewFile` (a file named after the path's last component, put with `withFile`).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let v = chain(
            &e,
            base(&e).await,
            &[("withNewFile", json!({ "path": "/tmp", "contents": "x" }))],
        )
        .await;
        assert_eq!(entries(&e, &v, "/tmp").await, ["tmp"]);
        assert_eq!(contents(&e, &v, "/tmp/tmp").await, "x");
    }
}
