//! `Directory`: snapshots edited as trees (`withNewFile`, `withDirectory`, `withoutFile`, `filter`, `diff`,
//! …) and read (`entries`, `glob`, `exists`, `stat`, `digest`, `export`). Pure tree work: no container runs.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::error::FieldError;
use crate::model::tree::{Entry, FileEntry, Tree, normalize};
use crate::ops::args::unsupported;
use crate::ops::engine::Engine;
use crate::ops::fields::{DirectoryField, ExistsType};
use crate::ops::file::source_files;
use crate::ops::host::{export_tree, host_path};
use crate::ops::op::{Cx, Op, run};
use crate::ops::value::Evaluated;

/// The op computing a builder field of a directory; `None` for a field this engine does not implement.
pub(crate) fn op(field: DirectoryField) -> Option<Op> {
    use DirectoryField as F;
    match field {
        F::Directory(a) => run(move |cx| async move { directory(&cx, &a.path) }),
        F::File(a) => run(move |cx| async move { file(&cx, &a.path) }),
        F::Stat(a) => run(move |cx| async move {
            let (tree, _) = cx.dir()?;
            let path = normalize(&a.path)?;
            let at = tree.resolve(&path, !a.do_not_follow_symlinks)?;
            stat_named(tree, &at, base_name(&path))
        }),
        F::Diff(a) => run(move |cx| async move {
            let other = cx.eval(&a.other).await?;
            edited(&cx, |t| {
                *t = t.diff(other.as_dir()?.0);
                Ok(())
            })
        }),
        F::Filter(a) => run(move |cx| async move {
            edited(&cx, |t| {
                *t = t.filter(&a.include, &a.exclude);
                Ok(())
            })
        }),
        F::WithTimestamps(a) => run(move |cx| async move {
            edited(&cx, |t| {
                *t = t.with_timestamps(a.timestamp);
                Ok(())
            })
        }),
        F::WithNewFile(a) => run(move |cx| async move {
            let blob = cx.engine.store.put_blob(a.contents.as_bytes())?;
            let entry = Entry::File(FileEntry {
                mode: a.permissions as u32,
                blob,
                size: a.contents.len() as u64,
                mtime: None,
            });
            edited(&cx, |t| {
                t.put(&normalize(&a.path)?, entry, true)?;
                Ok(())
            })
        }),
        F::WithNewDirectory(a) => run(move |cx| async move {
            edited(&cx, |t| {
                t.mkdir_all(&normalize(&a.path)?, a.permissions as u32)?;
                Ok(())
            })
        }),
        F::WithoutFile(a) => run(move |cx| async move {
            edited(&cx, |t| {
                t.remove_path(&normalize(&a.path)?)?;
                Ok(())
            })
        }),
        F::WithoutDirectory(a) => run(move |cx| async move {
            edited(&cx, |t| {
                t.remove_path(&normalize(&a.path)?)?;
                Ok(())
            })
        }),
        F::WithoutFiles(a) => run(move |cx| async move {
            edited(&cx, |t| {
                for p in &a.paths {
                    t.remove_path(&normalize(p)?)?;
                }
                Ok(())
            })
        }),
        F::WithFile(a) => run(move |cx| async move {
            let src = cx.eval(&a.source).await?;
            let mut entry = src.as_file()?.1.clone();
            if let Some(p) = a.permissions {
                entry.mode = p as u32;
            }
            edited(&cx, |t| {
                t.put(&normalize(&a.path)?, Entry::File(entry), true)?;
                Ok(())
            })
        }),
        F::WithFiles(a) => run(move |cx| async move {
            let files = source_files(&cx.engine, &a.sources, a.permissions).await?;
            edited(&cx, |t| {
                let path = normalize(&a.path)?;
                for (name, entry) in files {
                    let target = if path.is_empty() {
                        name
                    } else {
                        format!("{path}/{name}")
                    };
                    t.put(&target, Entry::File(entry), true)?;
                }
                Ok(())
            })
        }),
        F::WithDirectory(a) => run(move |cx| async move {
            let src = cx.eval(&a.source).await?;
            let mut filtered = src.as_dir()?.0.filter(&a.include, &a.exclude);
            if let Some(p) = a.permissions {
                filtered.set_permissions(p as u32);
            }
            edited(&cx, |t| {
                t.merge(&normalize(&a.path)?, &filtered)?;
                Ok(())
            })
        }),
        F::WithSymlink(a) => run(move |cx| async move {
            edited(&cx, |t| {
                let target = Entry::Symlink { target: a.target };
                t.put(&normalize(&a.link_name)?, target, false)?;
                Ok(())
            })
        }),
        _ => None,
    }
}

/// The parent directory changed by `f`, under the parent's name.
fn edited(cx: &Cx, f: impl FnOnce(&mut Tree) -> Result<(), FieldError>) -> Result<Evaluated, FieldError> {
    let (tree, name) = cx.dir()?;
    let mut tree = tree.clone();
    f(&mut tree)?;
    Ok(Evaluated::Dir {
        tree,
        name: name.to_owned(),
    })
}

/// `directory(path)`: the subdirectory, named after its last component.
fn directory(cx: &Cx, path: &str) -> Result<Evaluated, FieldError> {
    let (tree, _) = cx.dir()?;
    let path = normalize(path)?;
    let sub = tree.subtree(&tree.resolve(&path, true)?)?;
    let name = path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map_or("/".to_owned(), |n| format!("{n}/"));
    Ok(Evaluated::Dir { tree: sub, name })
}

/// `file(path)`: the file, named after its last component.
fn file(cx: &Cx, path: &str) -> Result<Evaluated, FieldError> {
    let (tree, _) = cx.dir()?;
    let path = normalize(path)?;
    let entry = tree.file(&tree.resolve(&path, true)?)?.clone();
    Ok(Evaluated::File {
        name: path.rsplit('/').next().unwrap_or_default().to_owned(),
        entry,
    })
}

/// Whether `path` (normalized; empty for the root, a directory) is in the tree, and of the `expected` kind
/// (any when `None`).
pub(crate) fn tree_has(tree: &Tree, path: &str, expected: Option<ExistsType>) -> bool {
    let entry = if path.is_empty() {
        Some(&Entry::Dir {
            mode: 0o755,
            mtime: None,
        })
    } else {
        tree.entries.get(path)
    };
    matches!(
        (entry, expected),
        (Some(_), None)
            | (Some(Entry::File(_)), Some(ExistsType::RegularType))
            | (Some(Entry::Dir { .. }), Some(ExistsType::DirectoryType))
            | (Some(Entry::Symlink { .. }), Some(ExistsType::SymlinkType))
    )
}

/// `stat` of `path` in a tree (the root for an empty path), reported under `name`.
pub(crate) fn stat_named(tree: &Tree, path: &str, name: String) -> Result<Evaluated, FieldError> {
    let stat = |file_type: &str, permissions: u32, size: u64| Evaluated::Stat {
        file_type: file_type.into(),
        name: name.clone(),
        permissions,
        size,
    };
    if path.is_empty() {
        return Ok(stat("DIRECTORY", 0o755, 0));
    }
    Ok(match tree.entries.get(path) {
        Some(Entry::Dir { mode, .. }) => stat("DIRECTORY", *mode, 0),
        Some(Entry::File(f)) => stat("REGULAR", f.mode, f.size),
        Some(Entry::Symlink { target }) => stat("SYMLINK", 0o777, target.len() as u64),
        None => return Err(crate::model::tree::PathError::NotFound(path.to_owned()).into()),
    })
}

/// The last component of a normalized path, `/` for the root.
pub(crate) fn base_name(path: &str) -> String {
    match path.rsplit('/').next() {
        Some(n) if !path.is_empty() => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Computes a leaf of the directory `tree` named `name`.
pub(crate) fn leaf(engine: &Arc<Engine>, field: DirectoryField, tree: &Tree, name: &str) -> Result<Value, FieldError> {
    use DirectoryField as F;
    Ok(match field {
        F::Entries(a) => {
            let path = normalize(a.path.as_deref().unwrap_or(""))?;
            json!(tree.list(&tree.resolve(&path, true)?)?)
        }
        F::Glob(a) => json!(tree.glob(&a.pattern)),
        F::Digest => json!(format!("sha256:{}", tree.digest())),
        F::Name => json!(name),
        F::Exists(a) => {
            let path = normalize(&a.path)?;
            // Symlinks are followed (inside the directory) unless asked not to; a path that cannot be
            // resolved (a loop, a file used as a directory) does not exist.
            let found = tree
                .resolve(&path, !a.do_not_follow_symlinks)
                .is_ok_and(|at| tree_has(tree, &at, a.expected_type));
            json!(found)
        }
        F::Export(a) => {
            let target = host_path(engine, &a.path);
            export_tree(engine, tree, &target, a.wipe)?;
            json!(target.to_string_lossy())
        }
        other => return Err(unsupported("Directory", other.name())),
    })
}
