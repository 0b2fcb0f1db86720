//! `Directory`: snapshots edited as trees (`withNewFile`, `withDirectory`, `withoutFile`, `filter`, `diff`,
//! …) and read (`entries`, `glob`, `exists`, `stat`, `digest`, `export`). Pure tree work: no container runs.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::model::error::FieldError;
use crate::model::tree::{Entry, FileEntry, Tree, normalize};
use crate::ops::args::{b, digest_arg, i, s, strings, unsupported};
use crate::ops::engine::Engine;
use crate::ops::file::{file_of, source_files};
use crate::ops::host::{export_tree, host_path};
use crate::ops::value::Evaluated;

/// Computes a field of the directory `p`.
pub(crate) async fn compute(
    engine: &Arc<Engine>,
    p: &Evaluated,
    field: &str,
    args: &Map<String, Value>,
) -> Result<Evaluated, FieldError> {
    let (tree, dname) = dir_of(p)?;
    let path_arg = |k: &str| normalize(s(args, k)).map_err(FieldError::from);
    let dir = |tree: Tree| Evaluated::Dir {
        tree,
        name: dname.to_owned(),
    };
    Ok(match field {
        "directory" => {
            let path = path_arg("path")?;
            let sub = tree.subtree(&tree.resolve(&path, true)?)?;
            let name = path
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .map_or("/".to_owned(), |n| format!("{n}/"));
            Evaluated::Dir { tree: sub, name }
        }
        "file" => {
            let path = path_arg("path")?;
            let entry = tree.file(&tree.resolve(&path, true)?)?.clone();
            Evaluated::File {
                name: path.rsplit('/').next().unwrap_or_default().to_owned(),
                entry,
            }
        }
        "stat" => {
            let path = path_arg("path")?;
            let at = tree.resolve(&path, !b(args, "doNotFollowSymlinks"))?;
            stat_named(tree, &at, base_name(&path))?
        }
        "diff" => {
            let other = object(engine, args, "other").await?;
            dir(tree.diff(dir_of(&other)?.0))
        }
        "filter" => dir(tree.filter(&strings(args, "include"), &strings(args, "exclude"))),
        "withTimestamps" => dir(tree.with_timestamps(i(args, "timestamp").unwrap_or(0))),
        _ => {
            let mut t = tree.clone();
            edit(engine, &mut t, field, args).await?;
            dir(t)
        }
    })
}

/// Evaluates the required object argument `k`.
async fn object(engine: &Arc<Engine>, args: &Map<String, Value>, k: &str) -> Result<Arc<Evaluated>, FieldError> {
    let d = digest_arg(args, k).ok_or_else(|| FieldError::new(format!("missing `{k}`")))?;
    engine.eval(&d).await
}

/// Applies a field that edits the tree in place (`withNewFile`, `withDirectory`, `withoutFile`, …) to `t`.
async fn edit(engine: &Arc<Engine>, t: &mut Tree, field: &str, args: &Map<String, Value>) -> Result<(), FieldError> {
    let path_arg = |k: &str| normalize(s(args, k)).map_err(FieldError::from);
    match field {
        "withNewFile" => {
            let path = path_arg("path")?;
            let contents = s(args, "contents");
            let blob = engine.store.put_blob(contents.as_bytes())?;
            let entry = Entry::File(FileEntry {
                mode: i(args, "permissions").unwrap_or(0o644) as u32,
                blob,
                size: contents.len() as u64,
                mtime: None,
            });
            t.put(&path, entry, true)?;
        }
        "withNewDirectory" => {
            t.mkdir_all(&path_arg("path")?, i(args, "permissions").unwrap_or(0o755) as u32)?;
        }
        "withoutFile" | "withoutDirectory" => {
            t.remove_path(&path_arg("path")?)?;
        }
        "withoutFiles" => {
            for p in strings(args, "paths") {
                t.remove_path(&normalize(&p)?)?;
            }
        }
        "withFile" => {
            let path = path_arg("path")?;
            let src = object(engine, args, "source").await?;
            let mut entry = file_of(&src)?.1.clone();
            if let Some(p) = i(args, "permissions") {
                entry.mode = p as u32;
            }
            t.put(&path, Entry::File(entry), true)?;
        }
        "withFiles" => {
            let path = path_arg("path")?;
            for (name, entry) in source_files(engine, args).await? {
                let target = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                t.put(&target, Entry::File(entry), true)?;
            }
        }
        "withDirectory" => {
            let path = path_arg("path")?;
            let src = object(engine, args, "source").await?;
            let mut filtered = dir_of(&src)?
                .0
                .filter(&strings(args, "include"), &strings(args, "exclude"));
            if let Some(p) = i(args, "permissions") {
                filtered.set_permissions(p as u32);
            }
            t.merge(&path, &filtered)?;
        }
        "withSymlink" => {
            let target = Entry::Symlink {
                target: s(args, "target").to_owned(),
            };
            t.put(&path_arg("linkName")?, target, false)?;
        }
        other => return Err(unsupported("Directory", other)),
    }
    Ok(())
}

pub(crate) fn dir_of(v: &Evaluated) -> Result<(&Tree, &str), FieldError> {
    match v {
        Evaluated::Dir { tree, name } => Ok((tree, name)),
        _ => Err(FieldError::new("internal error: expected a directory")),
    }
}

/// Whether `path` (normalized; empty for the root, a directory) is in the tree, and of the `expected` kind
/// (`REGULAR_TYPE`, `DIRECTORY_TYPE`, `SYMLINK_TYPE`; empty for any).
pub(crate) fn tree_has(tree: &Tree, path: &str, expected: &str) -> bool {
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
        (Some(_), "")
            | (Some(Entry::File(_)), "REGULAR_TYPE")
            | (Some(Entry::Dir { .. }), "DIRECTORY_TYPE")
            | (Some(Entry::Symlink { .. }), "SYMLINK_TYPE")
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

/// Computes the leaf `name` of the directory `v`.
pub(crate) fn leaf(
    engine: &Arc<Engine>,
    name: &str,
    args: &Map<String, Value>,
    v: &Evaluated,
) -> Result<Value, FieldError> {
    let leaf = |v: Value| Ok(v);
    match (name, v) {
        ("entries", Evaluated::Dir { tree, .. }) => {
            let path = normalize(s(args, "path"))?;
            leaf(json!(tree.list(&tree.resolve(&path, true)?)?))
        }
        ("glob", Evaluated::Dir { tree, .. }) => leaf(json!(tree.glob(s(args, "pattern")))),
        ("digest", Evaluated::Dir { tree, .. }) => leaf(json!(format!("sha256:{}", tree.digest()))),
        ("name", Evaluated::Dir { name, .. }) => leaf(json!(name)),
        ("exists", Evaluated::Dir { tree, .. }) => {
            let path = normalize(s(args, "path"))?;
            // Symlinks are followed (inside the directory) unless asked not to; a path that cannot be
            // resolved (a loop, a file used as a directory) does not exist.
            let found = tree
                .resolve(&path, !b(args, "doNotFollowSymlinks"))
                .is_ok_and(|at| tree_has(tree, &at, s(args, "expectedType")));
            leaf(json!(found))
        }
        ("export", Evaluated::Dir { tree, .. }) => {
            let target = host_path(engine, s(args, "path"));
            export_tree(engine, tree, &target, b(args, "wipe"))?;
            leaf(json!(target.to_string_lossy()))
        }
        _ => Err(unsupported("Directory", name)),
    }
}
