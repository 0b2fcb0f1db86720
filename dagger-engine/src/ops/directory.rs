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
    let obj_arg = |k: &str| {
        let engine = engine.clone();
        let d = digest_arg(args, k);
        async move {
            match d {
                Some(d) => engine.eval(&d).await.map(Some),
                None => Ok(None),
            }
        }
    };
    let path_arg = |k: &str| normalize(s(args, k)).map_err(FieldError::from);
    Ok({
        let (tree, dname) = dir_of(p)?;
        let mut t = tree.clone();
        match field {
            "withNewFile" => {
                let path = path_arg("path")?;
                let contents = s(args, "contents");
                let blob = engine.store.put_blob(contents.as_bytes())?;
                t.put(
                    &path,
                    Entry::File(FileEntry {
                        mode: i(args, "permissions").unwrap_or(0o644) as u32,
                        blob,
                        size: contents.len() as u64,
                        mtime: None,
                    }),
                    true,
                )?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "withNewDirectory" => {
                let path = path_arg("path")?;
                t.mkdir_all(&path, i(args, "permissions").unwrap_or(0o755) as u32)?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "withoutFile" | "withoutDirectory" => {
                t.remove_path(&path_arg("path")?)?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "withoutFiles" => {
                for p in strings(args, "paths") {
                    t.remove_path(&normalize(&p)?)?;
                }
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
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
                let at = t.resolve(&path, !b(args, "doNotFollowSymlinks"))?;
                stat_named(&t, &at, base_name(&path))?
            }
            "withFile" => {
                let path = path_arg("path")?;
                let src = obj_arg("source")
                    .await?
                    .ok_or_else(|| FieldError::new("missing `source`"))?;
                let (_, entry) = file_of(&src)?;
                let mut entry = entry.clone();
                if let Some(p) = i(args, "permissions") {
                    entry.mode = p as u32;
                }
                t.put(&path, Entry::File(entry), true)?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
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
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "withDirectory" => {
                let path = path_arg("path")?;
                let src = obj_arg("source")
                    .await?
                    .ok_or_else(|| FieldError::new("missing `source`"))?;
                let (stree, _) = dir_of(&src)?;
                let mut filtered = stree.filter(&strings(args, "include"), &strings(args, "exclude"));
                if let Some(p) = i(args, "permissions") {
                    filtered.set_permissions(p as u32);
                }
                t.merge(&path, &filtered)?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "withSymlink" => {
                let link = path_arg("linkName")?;
                t.put(
                    &link,
                    Entry::Symlink {
                        target: s(args, "target").to_owned(),
                    },
                    false,
                )?;
                Evaluated::Dir {
                    tree: t,
                    name: dname.to_owned(),
                }
            }
            "diff" => {
                let other = obj_arg("other")
                    .await?
                    .ok_or_else(|| FieldError::new("missing `other`"))?;
                let (otree, _) = dir_of(&other)?;
                Evaluated::Dir {
                    tree: tree.diff(otree),
                    name: dname.to_owned(),
                }
            }
            "filter" => Evaluated::Dir {
                tree: tree.filter(&strings(args, "include"), &strings(args, "exclude")),
                name: dname.to_owned(),
            },
            "withTimestamps" => Evaluated::Dir {
                tree: tree.with_timestamps(i(args, "timestamp").unwrap_or(0)),
                name: dname.to_owned(),
            },
            other => return Err(unsupported("Directory", other)),
        }
    })
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
