//! `Directory`: snapshots edited as trees (`withNewFile`, `withDirectory`, `withoutFile`, `filter`, `diff`,
//! …) and read (`entries`, `glob`, `exists`, `stat`, `digest`, `export`). Pure tree work: no container runs.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::tree::{Entry, FileEntry, Tree, normalize};
use crate::ops::error::OpError;

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
            edited(&cx, |t| Ok::<_, OpError>(t.diff(other.as_dir()?.0)))
        }),
        F::Filter(a) => tree_edit(move |t| Ok::<_, OpError>(t.filter(&a.include, &a.exclude))),
        F::WithTimestamps(a) => tree_edit(move |t| Ok::<_, OpError>(t.with_timestamps(a.timestamp))),
        F::WithNewDirectory(a) => {
            tree_edit(move |mut t| t.mkdir_all(&normalize(&a.path)?, a.permissions as u32).map(|_| t))
        }
        F::WithoutFile(a) => tree_edit(move |t| without(t, &[a.path])),
        F::WithoutDirectory(a) => tree_edit(move |t| without(t, &[a.path])),
        F::WithoutFiles(a) => tree_edit(move |t| without(t, &a.paths)),
        F::WithSymlink(a) => tree_edit(move |mut t| {
            let target = Entry::Symlink { target: a.target };
            t.put(&normalize(&a.link_name)?, target, false).map(|_| t)
        }),
        F::WithNewFile(a) => run(move |cx| async move {
            let blob = cx.engine.store.put_blob(a.contents.as_bytes())?;
            let entry = FileEntry {
                mode: a.permissions as u32,
                blob,
                size: a.contents.len() as u64,
                mtime: None,
            };
            edited(&cx, |t| put_files(t, &a.path, vec![(None, entry)]))
        }),
        F::WithFile(a) => run(move |cx| async move {
            let files = source_files(&cx.engine, &[a.source], a.permissions).await?;
            let files = files.into_iter().map(|(_, entry)| (None, entry)).collect();
            edited(&cx, |t| put_files(t, &a.path, files))
        }),
        F::WithFiles(a) => run(move |cx| async move {
            let files = source_files(&cx.engine, &a.sources, a.permissions).await?;
            let files = files.into_iter().map(|(name, entry)| (Some(name), entry)).collect();
            edited(&cx, |t| put_files(t, &a.path, files))
        }),
        F::WithDirectory(a) => run(move |cx| async move {
            let src = cx.eval(&a.source).await?;
            let mut filtered = src.as_dir()?.0.filter(&a.include, &a.exclude);
            if let Some(p) = a.permissions {
                filtered.set_permissions(p as u32);
            }
            edited(&cx, |mut t| t.merge(&normalize(&a.path)?, &filtered).map(|_| t))
        }),
        _ => None,
    }
}

/// An op that makes a new tree from the parent's alone.
fn tree_edit<E: Into<OpError>>(f: impl FnOnce(Tree) -> Result<Tree, E> + Send + 'static) -> Option<Op> {
    run(move |cx| async move { edited(&cx, f) })
}

/// `tree` without `paths` (each normalized; a missing one is no error).
fn without(mut tree: Tree, paths: &[String]) -> Result<Tree, OpError> {
    for p in paths {
        tree.remove_path(&normalize(p)?)?;
    }
    Ok(tree)
}

/// `tree` with files put under `dir`: each at `dir/name`, or at `dir` itself when it has no name.
fn put_files(mut tree: Tree, dir: &str, files: Vec<(Option<String>, FileEntry)>) -> Result<Tree, OpError> {
    let dir = normalize(dir)?;
    for (name, entry) in files {
        let target = match name {
            None => dir.clone(),
            Some(name) if dir.is_empty() => name,
            Some(name) => format!("{dir}/{name}"),
        };
        tree.put(&target, Entry::File(entry), true)?;
    }
    Ok(tree)
}

/// The parent directory made into a new tree by `f`, under the parent's name.
fn edited<E: Into<OpError>>(cx: &Cx, f: impl FnOnce(Tree) -> Result<Tree, E>) -> Result<Evaluated, OpError> {
    let (tree, name) = cx.dir()?;
    Ok(Evaluated::Dir {
        tree: f(tree.clone()).map_err(Into::into)?,
        name: name.to_owned(),
    })
}

/// `directory(path)`: the subdirectory, named after its last component.
fn directory(cx: &Cx, path: &str) -> Result<Evaluated, OpError> {
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
fn file(cx: &Cx, path: &str) -> Result<Evaluated, OpError> {
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
pub(crate) fn stat_named(tree: &Tree, path: &str, name: String) -> Result<Evaluated, OpError> {
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
pub(crate) fn leaf(engine: &Arc<Engine>, field: DirectoryField, tree: &Tree, name: &str) -> Result<Value, OpError> {
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
        other => return Err(OpError::unsupported("Directory", other.name())),
    })
}

#[cfg(test)]
mod tests {
    //! Directory ops on trees: no runtime, no root.

    use serde_json::json;

    use super::*;
    use crate::ops::op::testing::{self, empty_dir, engine, object, tree};

    fn op_of(field: &str, args: serde_json::Value) -> Option<Op> {
        op(DirectoryField::parse(field, &testing::args(args)).expect("a field of Directory"))
    }

    async fn apply(
        e: &Arc<Engine>,
        parent: Evaluated,
        field: &str,
        args: serde_json::Value,
    ) -> Result<Evaluated, OpError> {
        testing::apply(e, parent, op_of(field, args)).await
    }

    fn kinds(v: &Evaluated) -> Vec<(String, &'static str)> {
        tree(v)
            .entries
            .iter()
            .map(|(p, e)| {
                let kind = match e {
                    Entry::Dir { .. } => "dir",
                    Entry::File(_) => "file",
                    Entry::Symlink { .. } => "link",
                };
                (p.clone(), kind)
            })
            .collect()
    }

    async fn with_files(engine: &Arc<Engine>, paths: &[&str]) -> Evaluated {
        let mut dir = empty_dir();
        for p in paths {
            dir = apply(
                engine,
                dir,
                "withNewFile",
                json!({ "path": p, "contents": p, "permissions": 420 }),
            )
            .await
            .expect("withNewFile");
        }
        dir
    }

    #[tokio::test]
    async fn new_files_make_their_parents_and_keep_their_mode() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = apply(
            &e,
            empty_dir(),
            "withNewFile",
            json!({ "path": "a/b/c.txt", "contents": "hi", "permissions": 0o600 }),
        )
        .await
        .expect("op");
        assert_eq!(
            kinds(&dir),
            [("a".into(), "dir"), ("a/b".into(), "dir"), ("a/b/c.txt".into(), "file")]
        );
        let Some(Entry::File(f)) = tree(&dir).entries.get("a/b/c.txt") else {
            panic!("a file");
        };
        assert_eq!((f.mode, f.size), (0o600, 2));
        assert_eq!(e.store.get_blob(&f.blob).expect("blob"), b"hi");
    }

    #[tokio::test]
    async fn new_directories_and_symlinks() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = apply(
            &e,
            empty_dir(),
            "withNewDirectory",
            json!({ "path": "x/y", "permissions": 0o700 }),
        )
        .await
        .expect("op");
        let dir = apply(&e, dir, "withSymlink", json!({ "target": "x/y", "linkName": "l" }))
            .await
            .expect("op");
        assert_eq!(
            kinds(&dir),
            [("l".into(), "link"), ("x".into(), "dir"), ("x/y".into(), "dir")]
        );
        assert!(matches!(
            tree(&dir).entries.get("x/y"),
            Some(Entry::Dir { mode: 0o700, .. })
        ));
    }

    #[tokio::test]
    async fn removals_take_files_and_directories_and_ignore_what_is_missing() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(&e, &["a/1", "a/2", "b/3", "c"]).await;
        let one = apply(&e, dir.clone(), "withoutFile", json!({ "path": "c" }))
            .await
            .expect("op");
        assert!(!tree(&one).entries.contains_key("c"));
        let two = apply(&e, dir.clone(), "withoutDirectory", json!({ "path": "a" }))
            .await
            .expect("op");
        assert_eq!(
            kinds(&two),
            [("b".into(), "dir"), ("b/3".into(), "file"), ("c".into(), "file")]
        );
        let many = apply(
            &e,
            dir,
            "withoutFiles",
            json!({ "paths": ["a/1", "b/3", "nothing/here"] }),
        )
        .await
        .expect("a missing path is no error");
        assert_eq!(
            kinds(&many),
            [
                ("a".into(), "dir"),
                ("a/2".into(), "file"),
                ("b".into(), "dir"),
                ("c".into(), "file")
            ]
        );
    }

    #[tokio::test]
    async fn files_from_other_objects_keep_their_names_or_take_the_path() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let src = with_files(&e, &["one", "two"]).await;
        let one = apply(&e, src.clone(), "file", json!({ "path": "one" }))
            .await
            .expect("file");
        let two = apply(&e, src, "file", json!({ "path": "two" })).await.expect("file");
        let (one, two) = (object(&e, one), object(&e, two));
        let dir = apply(
            &e,
            empty_dir(),
            "withFile",
            json!({ "path": "renamed", "source": { "$id": one }, "permissions": 0o755 }),
        )
        .await
        .expect("withFile");
        let Some(Entry::File(f)) = tree(&dir).entries.get("renamed") else {
            panic!("a file at the path");
        };
        assert_eq!(f.mode, 0o755);
        let dir = apply(
            &e,
            dir,
            "withFiles",
            json!({ "path": "sub", "sources": [{ "$id": one }, { "$id": two }] }),
        )
        .await
        .expect("withFiles");
        assert_eq!(
            kinds(&dir),
            [
                ("renamed".into(), "file"),
                ("sub".into(), "dir"),
                ("sub/one".into(), "file"),
                ("sub/two".into(), "file")
            ]
        );
        let at_root = apply(
            &e,
            empty_dir(),
            "withFiles",
            json!({ "path": "", "sources": [{ "$id": two }] }),
        )
        .await
        .expect("withFiles at the root");
        assert_eq!(kinds(&at_root), [("two".into(), "file")]);
    }

    #[tokio::test]
    async fn directories_merge_filtered_with_their_permissions() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let src = object(&e, with_files(&e, &["keep.rs", "skip.log", "d/keep.rs"]).await);
        let dir = apply(
            &e,
            with_files(&e, &["old"]).await,
            "withDirectory",
            json!({ "path": "in", "source": { "$id": src }, "exclude": ["*.log"], "permissions": 0o700 }),
        )
        .await
        .expect("withDirectory");
        assert_eq!(
            kinds(&dir),
            [
                ("in".into(), "dir"),
                ("in/d".into(), "dir"),
                ("in/d/keep.rs".into(), "file"),
                ("in/keep.rs".into(), "file"),
                ("old".into(), "file")
            ]
        );
        assert!(matches!(tree(&dir).entries.get("in/keep.rs"), Some(Entry::File(f)) if f.mode == 0o700));
    }

    #[tokio::test]
    async fn subdirectories_files_and_stats_are_named_after_their_path() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(&e, &["a/b/c"]).await;
        let sub = apply(&e, dir.clone(), "directory", json!({ "path": "a/b" }))
            .await
            .expect("directory");
        assert_eq!(sub.as_dir().expect("dir").1, "b/");
        assert_eq!(kinds(&sub), [("c".into(), "file")]);
        let file = apply(&e, dir.clone(), "file", json!({ "path": "a/b/c" }))
            .await
            .expect("file");
        assert_eq!(file.as_file().expect("file").0, "c");
        let Evaluated::Stat { file_type, name, .. } = apply(&e, dir.clone(), "stat", json!({ "path": "a" }))
            .await
            .expect("stat")
        else {
            panic!("a stat");
        };
        assert_eq!((file_type.as_str(), name.as_str()), ("DIRECTORY", "a"));
        let missing = apply(&e, dir.clone(), "file", json!({ "path": "a/nope" }))
            .await
            .expect_err("missing");
        assert!(missing.message.contains("a/nope"), "{}", missing.message);
        let not_a_file = apply(&e, dir, "file", json!({ "path": "a" }))
            .await
            .expect_err("a directory");
        assert!(!not_a_file.message.is_empty());
    }

    #[tokio::test]
    async fn diff_filter_and_timestamps_make_new_trees() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let base = with_files(&e, &["a", "b"]).await;
        let more = object(&e, with_files(&e, &["a", "b", "c"]).await);
        let diff = apply(&e, base.clone(), "diff", json!({ "other": { "$id": more } }))
            .await
            .expect("diff");
        assert_eq!(kinds(&diff), [("c".into(), "file")]);
        let only_a = apply(&e, base.clone(), "filter", json!({ "include": ["a"] }))
            .await
            .expect("filter");
        assert_eq!(kinds(&only_a), [("a".into(), "file")]);
        let stamped = apply(&e, base, "withTimestamps", json!({ "timestamp": 1000 }))
            .await
            .expect("stamp");
        assert!(tree(&stamped).entries.values().all(|entry| match entry {
            Entry::File(f) => f.mtime == Some(1000),
            _ => true,
        }));
    }

    #[tokio::test]
    async fn leaves_read_the_tree() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(&e, &["src/main.rs", "src/lib.rs", "README"]).await;
        let dir = apply(&e, dir, "withSymlink", json!({ "target": "src", "linkName": "s" }))
            .await
            .expect("link");
        let t = tree(&dir).clone();
        let leaf_of = |field: &str, args: serde_json::Value| {
            let f = DirectoryField::parse(field, args.as_object().expect("object")).expect("field");
            leaf(&e, f, &t, "root/")
        };
        assert_eq!(
            leaf_of("entries", json!({})).expect("entries"),
            json!(["README", "s", "src/"])
        );
        assert_eq!(
            leaf_of("entries", json!({ "path": "s" })).expect("through a link"),
            json!(["lib.rs", "main.rs"])
        );
        assert_eq!(
            leaf_of("glob", json!({ "pattern": "**/*.rs" })).expect("glob"),
            json!(["src/lib.rs", "src/main.rs"])
        );
        assert_eq!(leaf_of("name", json!({})).expect("name"), json!("root/"));
        let exists = |args: serde_json::Value| leaf_of("exists", args).expect("exists");
        assert_eq!(
            exists(json!({ "path": "s/main.rs", "expectedType": "REGULAR_TYPE" })),
            json!(true)
        );
        assert_eq!(
            exists(json!({ "path": "s", "expectedType": "DIRECTORY_TYPE" })),
            json!(true)
        );
        assert_eq!(
            exists(json!({ "path": "s", "expectedType": "SYMLINK_TYPE", "doNotFollowSymlinks": true })),
            json!(true)
        );
        assert_eq!(
            exists(json!({ "path": "README/x" })),
            json!(false),
            "a path through a file names nothing"
        );
        let digest = leaf_of("digest", json!({})).expect("digest");
        assert!(digest.as_str().is_some_and(|d| d.starts_with("sha256:")));
        let err = leaf_of("dockerBuild", json!({})).expect_err("unsupported");
        assert_eq!(
            err.message,
            "`Directory.dockerBuild` is not supported by this engine yet"
        );
    }

    #[test]
    fn unimplemented_builders_have_no_op() {
        assert!(op_of("dockerBuild", json!({})).is_none());
        assert!(op_of("withNewFile", json!({ "path": "f", "contents": "" })).is_some());
    }
}
