//! `Directory`: snapshots edited as trees (`withNewFile`, `withDirectory`, `withoutFile`, `filter`, `diff`,
//! …) and read (`entries`, `glob`, `exists`, `stat`, `digest`, `export`). Pure tree work: no container runs.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::model::ignore::GitignoreRules;
use crate::model::tree::{Entry, FileEntry, PathError, Tree, normalize, split_wildcards};
use crate::ops::error::OpError;
use crate::store::Store;

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
            if a.path.is_empty() {
                // As in Dagger, the empty path names nothing (the root is `.` or `/`).
                return Err(PathError::NotFound(String::new()).into());
            }
            let path = normalize(&a.path)?;
            let at = tree
                .resolve(&path, !a.do_not_follow_symlinks)
                .map_err(|e| e.at(&a.path))?;
            Ok(stat_named(tree, &at, base_name(&path)).map_err(|e| e.at(&a.path))?)
        }),
        F::Diff(a) => run(move |cx| async move {
            let other = cx.eval(&a.other).await?;
            edited(&cx, |t| Ok::<_, OpError>(t.diff(other.as_dir()?.0)))
        }),
        F::Filter(a) => run(move |cx| async move {
            let store = cx.engine.store.clone();
            edited(&cx, |t| filtered(&store, &t, &a.include, &a.exclude, a.gitignore))
        }),
        F::WithTimestamps(a) => tree_edit(move |t| Ok::<_, OpError>(t.with_timestamps(a.timestamp))),
        F::WithNewDirectory(a) => tree_edit(move |mut t| {
            if let Some(outside) = outside_parent(&a.path) {
                return Err(OpError::new(format!(
                    "cannot create directory outside parent: {outside}"
                )));
            }
            t.mkdir_all(&normalize(&a.path)?, a.permissions as u32)?;
            Ok(t)
        }),
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
            edited(&cx, |mut t| {
                let path = normalize(&a.path)?;
                // Dagger opens the path for writing, which a directory refuses.
                if tree_is_dir_at(&t, &path) {
                    return Err(OpError::new(format!("open {}: is a directory", a.path)));
                }
                t.put(&path, Entry::File(entry), true)?;
                Ok::<_, OpError>(t)
            })
        }),
        F::WithFile(a) => run(move |cx| async move {
            // A bad path is reported before the source is evaluated.
            normalize(&a.path)?;
            let files = source_files(&cx.engine, &[a.source], a.permissions).await?;
            edited(&cx, |mut t| {
                for (name, entry) in files {
                    put_file(&mut t, &a.path, &name, entry)?;
                }
                Ok::<_, OpError>(t)
            })
        }),
        F::WithFiles(a) => run(move |cx| async move {
            // A bad path is reported before the source is evaluated.
            normalize(&a.path)?;
            let files = source_files(&cx.engine, &a.sources, a.permissions).await?;
            edited(&cx, |mut t| {
                for (name, entry) in files {
                    // Each file goes where `withFile(path/name)` would put it.
                    put_file(
                        &mut t,
                        &format!("{}/{name}", a.path.trim_end_matches('/')),
                        &name,
                        entry,
                    )?;
                }
                Ok::<_, OpError>(t)
            })
        }),
        F::WithDirectory(a) => run(move |cx| async move {
            // A bad path is reported before the source is evaluated.
            normalize(&a.path)?;
            let src = cx.eval(&a.source).await?;
            let mut filtered = filtered(&cx.engine.store, src.as_dir()?.0, &a.include, &a.exclude, a.gitignore)?;
            if let Some(p) = a.permissions {
                filtered.set_permissions(p as u32);
            }
            edited(&cx, |mut t| t.merge(&normalize(&a.path)?, &filtered).map(|_| t))
        }),
        _ => None,
    }
}

/// `tree` with only what `include` names (everything when empty), without what `exclude` names, and with
/// `gitignore` without what its own `.gitignore` files ignore (each relative to its folder, no `.git`
/// needed; rules of a `.gitignore` the patterns leave out still apply).
pub(crate) fn filtered(
    store: &Store,
    tree: &Tree,
    include: &[String],
    exclude: &[String],
    gitignore: bool,
) -> Result<Tree, OpError> {
    let out = tree.filter(include, exclude);
    if !gitignore {
        return Ok(out);
    }
    let mut rules = GitignoreRules::default();
    for (path, entry) in &tree.entries {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        if let (".gitignore", Entry::File(f)) = (name, entry) {
            rules.add(dir, &String::from_utf8_lossy(&store.get_blob(&f.blob)?));
        }
    }
    if rules.is_empty() {
        return Ok(out);
    }
    Ok(out.without(|path, is_dir| rules.ignored(path, is_dir)))
}

/// An op that makes a new tree from the parent's alone.
fn tree_edit<E: Into<OpError>>(f: impl FnOnce(Tree) -> Result<Tree, E> + Send + 'static) -> Option<Op> {
    run(move |cx| async move { edited(&cx, f) })
}

/// `tree` without `paths` (each normalized; a missing one is no error). A path holding a `*` is a pattern
/// (see [`split_wildcards`]): everything it matches is removed, and no match is no error; but, as in Dagger,
/// a pattern whose directory does not exist is one (`dir: no such file or directory`).
fn without(mut tree: Tree, paths: &[String]) -> Result<Tree, OpError> {
    for p in paths {
        let p = normalize(p)?;
        match split_wildcards(&p) {
            Some((dir, pattern)) => {
                let base = tree.resolve(&dir, true).map_err(|e| e.at(&dir))?;
                if !base.is_empty() && !tree.entries.contains_key(&base) {
                    return Err(PathError::NotFound(dir).into());
                }
                for m in tree.wildcard_matches(&base, &pattern) {
                    tree.remove(&m);
                }
            }
            None => {
                tree.remove_path(&p)?;
            }
        }
    }
    Ok(tree)
}

/// Puts the file `name` at the user path `dest`, or inside it under its own name when `dest` is an existing
/// directory (the root given as `""`, `.` or `/` included) or ends with `/` (then created as needed).
pub(crate) fn put_file(tree: &mut Tree, dest: &str, name: &str, entry: FileEntry) -> Result<String, OpError> {
    let path = normalize(dest)?;
    let into_dir = dest_is_dir_hint(dest) || tree.is_dir(&tree.resolve(&path, true)?);
    let target = if into_dir {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}/{name}")
        }
    } else {
        path
    };
    Ok(tree.put(&target, Entry::File(entry), true)?)
}

/// Whether a destination path says it is a directory: it ends with `/` or `/.`.
pub(crate) fn dest_is_dir_hint(dest: &str) -> bool {
    dest.ends_with('/') || dest.ends_with("/.")
}

/// The parent directory made into a new tree by `f`, under the parent's name.
fn edited<E: Into<OpError>>(cx: &Cx, f: impl FnOnce(Tree) -> Result<Tree, E>) -> Result<Evaluated, OpError> {
    let (tree, name) = cx.dir()?;
    Ok(Evaluated::Dir {
        tree: f(tree.clone()).map_err(Into::into)?,
        name: name.to_owned(),
    })
}

/// Whether the user path `path` (normalized) names a directory of `tree`, links followed.
fn tree_is_dir_at(tree: &Tree, path: &str) -> bool {
    tree.resolve(path, true).is_ok_and(|at| tree.is_dir(&at))
}

/// The cleaned form of a relative path that climbs out of its directory (`b/../../c` is `../c`), as
/// `withNewDirectory` reports it; `None` for a path that stays inside.
fn outside_parent(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    (parts.first() == Some(&"..") && parts.len() > 1).then(|| parts.join("/"))
}

/// `directory(path)`: the subdirectory, named after its last component.
fn directory(cx: &Cx, given: &str) -> Result<Evaluated, OpError> {
    let (tree, _) = cx.dir()?;
    let path = normalize(given)?;
    let sub = tree
        .resolve(&path, true)
        .and_then(|at| tree.subtree(&at))
        .map_err(|e| e.at(given))?;
    let name = path
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map_or("/".to_owned(), |n| format!("{n}/"));
    Ok(Evaluated::Dir { tree: sub, name })
}

/// `file(path)`: the file, named after its last component.
fn file(cx: &Cx, given: &str) -> Result<Evaluated, OpError> {
    let (tree, _) = cx.dir()?;
    let path = normalize(given)?;
    let entry = tree
        .resolve(&path, true)
        .and_then(|at| tree.file(&at).cloned())
        .map_err(|e| e.at(given))?;
    Ok(Evaluated::File {
        name: path.rsplit('/').next().unwrap_or_default().to_owned(),
        entry,
    })
}

/// Whether `exists` follows a final symlink: not for the symlink check, nor with `doNotFollowSymlinks`.
pub(crate) fn follows_links(do_not_follow: bool, expected: Option<ExistsType>) -> bool {
    !do_not_follow && expected != Some(ExistsType::SymlinkType)
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
pub(crate) fn stat_named(tree: &Tree, path: &str, name: String) -> Result<Evaluated, PathError> {
    let stat = |file_type: &str, permissions: u32, size: u64| Evaluated::Stat {
        file_type: file_type.into(),
        name: name.clone(),
        permissions,
        size,
    };
    if path.is_empty() {
        return Ok(stat("DIRECTORY", tree.root_mode(), 0));
    }
    Ok(match tree.entries.get(path) {
        Some(Entry::Dir { mode, .. }) => stat("DIRECTORY", *mode, 0),
        Some(Entry::File(f)) => stat("REGULAR", f.mode, f.size),
        Some(Entry::Symlink { target }) => stat("SYMLINK", 0o777, target.len() as u64),
        None => return Err(PathError::NotFound(path.to_owned())),
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
            let given = a.path.as_deref().unwrap_or("");
            let path = normalize(given)?;
            let listed = tree.resolve(&path, true).and_then(|at| tree.list(&at));
            json!(listed.map_err(|e| e.at(given))?)
        }
        F::Glob(a) => json!(tree.glob(&a.pattern)),
        F::Digest => json!(format!("sha256:{}", tree.digest())),
        F::Name => json!(name),
        F::Exists(a) => {
            let path = normalize(&a.path)?;
            // Symlinks are followed (inside the directory) for the any, regular and directory checks; the
            // symlink check and `doNotFollowSymlinks` look at a final link itself. A path that cannot be
            // resolved (a loop, a file used as a directory) does not exist, nor does the empty path.
            let follow = follows_links(a.do_not_follow_symlinks, a.expected_type);
            let found = !a.path.is_empty()
                && tree
                    .resolve(&path, follow)
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

    /// The sorted paths of a directory value, directories with a trailing `/`.
    fn paths(v: &Evaluated) -> Vec<String> {
        tree(v).glob("**")
    }

    #[tokio::test]
    async fn removal_paths_with_a_star_are_patterns_and_no_match_is_no_error() {
        // Ported from Dagger's `TestWithoutPaths` (directory_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(
            &e,
            &[
                "foo.txt",
                "a/bar.txt",
                "a/data.json",
                "b/foo.txt",
                "b/bar.txt",
                "b/data.json",
                "c/file-a1.txt",
                "c/file-a1.json",
                "c/file-b1.txt",
                "c/file-b1.json",
            ],
        )
        .await;
        let without = |field: &'static str, args: serde_json::Value| {
            let (e, dir) = (e.clone(), dir.clone());
            async move { apply(&e, dir, field, args).await.map(|v| paths(&v)) }
        };
        let b = without("withoutFile", json!({ "path": "b/*.txt" })).await.expect("op");
        assert!(b.contains(&"b/data.json".to_owned()) && !b.iter().any(|p| p.starts_with("b/") && p.ends_with(".txt")));
        assert!(
            b.contains(&"foo.txt".to_owned()),
            "the pattern stays in its directory: {b:?}"
        );
        let c = without("withoutFile", json!({ "path": "c/*a1*" })).await.expect("op");
        let c_left: Vec<&String> = c.iter().filter(|p| p.starts_with("c/") && *p != "c/").collect();
        assert_eq!(c_left, ["c/file-b1.json", "c/file-b1.txt"]);
        let none = without("withoutFiles", json!({ "paths": ["c/*.nope", "*.nope", "x"] }))
            .await
            .expect("no match is no error");
        assert_eq!(none, paths(&dir));
        // As in Dagger, a pattern whose directory does not exist is an error.
        let err = without("withoutFiles", json!({ "paths": ["*.nope", "nothing/*.txt"] }))
            .await
            .expect_err("a missing directory");
        assert_eq!(err.message, "nothing: no such file or directory");
        let many = without("withoutFiles", json!({ "paths": ["a/*", "*/foo.txt"] }))
            .await
            .expect("op");
        // `a/*` keeps `a` itself; `*/foo.txt` is one directory deep, so the top `foo.txt` stays.
        assert_eq!(
            many,
            [
                "a/",
                "b/",
                "b/bar.txt",
                "b/data.json",
                "c/",
                "c/file-a1.json",
                "c/file-a1.txt",
                "c/file-b1.json",
                "c/file-b1.txt",
                "foo.txt"
            ]
        );

        let dirs = with_files(&e, &["foo.txt", "a1/a1-file", "a2/a2-file", "b1/b1-file"]).await;
        let v = apply(&e, dirs, "withoutDirectory", json!({ "path": "a*" }))
            .await
            .expect("op");
        assert_eq!(paths(&v), ["b1/", "b1/b1-file", "foo.txt"]);

        // A link in the pattern's directory is followed; a matching link is removed itself.
        let linked = apply(
            &e,
            with_files(&e, &["real/x.txt", "real/y.md"]).await,
            "withSymlink",
            json!({ "target": "real", "linkName": "via" }),
        )
        .await
        .expect("link");
        let v = apply(&e, linked.clone(), "withoutFile", json!({ "path": "via/*.txt" }))
            .await
            .expect("op");
        assert_eq!(paths(&v), ["real/", "real/y.md", "via"]);
        let v = apply(&e, linked, "withoutFile", json!({ "path": "v*" }))
            .await
            .expect("op");
        assert_eq!(paths(&v), ["real/", "real/x.txt", "real/y.md"]);
    }

    #[tokio::test]
    async fn with_file_into_an_existing_directory_keeps_the_file_name() {
        // Ported from Dagger's `TestWithFile` and `TestWithFiles` (directory_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let src = with_files(&e, &["sub/subterrain/some-file"]).await;
        let f = apply(&e, src, "file", json!({ "path": "sub/subterrain/some-file" }))
            .await
            .expect("file");
        let f = object(&e, f);
        let with_file = |dir: Evaluated, path: &'static str| {
            let (e, f) = (e.clone(), f.clone());
            async move { apply(&e, dir, "withFile", json!({ "path": path, "source": { "$id": f } })).await }
        };
        for root in ["", ".", "/"] {
            let v = with_file(empty_dir(), root).await.expect("withFile at the root");
            assert_eq!(paths(&v), ["some-file"], "root given as {root:?}");
        }
        let existing = with_files(&e, &["d/other"]).await;
        let v = with_file(existing.clone(), "d").await.expect("into d");
        assert_eq!(paths(&v), ["d/", "d/other", "d/some-file"]);
        let v = with_file(existing.clone(), "target-file").await.expect("renamed");
        assert_eq!(paths(&v), ["d/", "d/other", "target-file"]);
        let v = with_file(existing, "new/")
            .await
            .expect("a trailing slash names a directory");
        assert_eq!(paths(&v), ["d/", "d/other", "new/", "new/some-file"]);
        // The directory a `directory(path)` gave is the one written into.
        let sub = apply(
            &e,
            with_files(&e, &["some-other-file", "some-dir/x"]).await,
            "directory",
            json!({ "path": "/some-dir" }),
        )
        .await
        .expect("directory");
        let v = with_file(sub, "f").await.expect("withFile");
        assert_eq!(paths(&v), ["f", "x"]);

        let two = apply(
            &e,
            with_files(&e, &["second-file"]).await,
            "file",
            json!({ "path": "second-file" }),
        )
        .await
        .expect("file");
        let two = object(&e, two);
        for (at, want) in [
            ("/", vec!["second-file", "some-file"]),
            (
                "/a/b/c/",
                vec!["a/", "a/b/", "a/b/c/", "a/b/c/second-file", "a/b/c/some-file"],
            ),
        ] {
            let v = apply(
                &e,
                empty_dir(),
                "withFiles",
                json!({ "path": at, "sources": [{ "$id": f }, { "$id": two }] }),
            )
            .await
            .expect("withFiles");
            assert_eq!(paths(&v), want, "withFiles at {at}");
        }
        // A file whose `path/name` is an existing directory goes inside it, as `withFile` would put it.
        let v = apply(
            &e,
            with_files(&e, &["some-file/keep"]).await,
            "withFiles",
            json!({ "path": "", "sources": [{ "$id": f }] }),
        )
        .await
        .expect("withFiles");
        assert_eq!(paths(&v), ["some-file/", "some-file/keep", "some-file/some-file"]);
    }

    #[tokio::test]
    async fn glob_results_that_are_directories_end_with_a_slash() {
        // Ported from Dagger's `TestGlob` (directory_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(
            &e,
            &[
                "main.go",
                "test.md",
                "subdir/foo.txt",
                "subdir/README.md",
                "subdir2/subsubdir/x",
                "foo/bar.md/w.md",
                "foo/baz.go/y.md",
            ],
        )
        .await;
        let t = tree(&dir).clone();
        let glob = |pattern: &str| {
            let f = DirectoryField::parse("glob", json!({ "pattern": pattern }).as_object().expect("object"))
                .expect("field");
            leaf(&e, f, &t, "/").expect("glob")
        };
        assert_eq!(glob("*.md"), json!(["test.md"]));
        assert_eq!(
            glob("**/*.md"),
            json!([
                "foo/bar.md/",
                "foo/bar.md/w.md",
                "foo/baz.go/y.md",
                "subdir/README.md",
                "test.md"
            ])
        );
        assert_eq!(glob("subdir*"), json!(["subdir/", "subdir2/"]));
        assert_eq!(
            glob("subdir2/**/*"),
            json!(["subdir2/subsubdir/", "subdir2/subsubdir/x"])
        );
        assert_eq!(glob("nothing*"), json!([]));
    }

    #[tokio::test]
    async fn exists_follows_links_except_for_the_symlink_check() {
        // Ported from Dagger's `TestExists` and `TestExistsUsingAbsoluteSymlink` (directory_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let mut dir = with_files(&e, &["quotes/descartes", "some-file"]).await;
        for (target, link) in [
            ("quotes/descartes", "i-am"),
            ("quotes/does-not-exist", "nothing"),
            ("/some-file", "/abs-link"),
            ("/quotes", "quotes-link"),
        ] {
            dir = apply(&e, dir, "withSymlink", json!({ "target": target, "linkName": link }))
                .await
                .expect("link");
        }
        let t = tree(&dir).clone();
        let exists = |path: &str, ty: Option<&str>, no_follow: bool| {
            let mut args = json!({ "path": path, "doNotFollowSymlinks": no_follow });
            if let Some(ty) = ty {
                args["expectedType"] = json!(ty);
            }
            let f = DirectoryField::parse("exists", args.as_object().expect("object")).expect("field");
            leaf(&e, f, &t, "/").expect("exists")
        };
        let (reg, dir_t, link) = (Some("REGULAR_TYPE"), Some("DIRECTORY_TYPE"), Some("SYMLINK_TYPE"));
        for (path, ty, no_follow, want) in [
            ("We believe in nothing Lebowski", None, false, false),
            ("quotes", None, false, true),
            ("quotes", dir_t, false, true),
            ("quotes/descartes", dir_t, false, false),
            ("quotes/descartes", reg, false, true),
            ("quotes", reg, false, false),
            ("i-am", link, false, true),
            ("quotes/descartes", link, false, false),
            ("i-am", reg, false, true),
            ("nothing", None, true, true),
            ("nothing", None, false, false),
            ("nothing", link, false, true),
            ("i-am", reg, true, false),
            ("abs-link", reg, false, true),
            ("quotes-link/descartes", reg, false, true),
            ("quotes-link", dir_t, false, true),
            ("quotes-link", dir_t, true, false),
            ("", None, false, false),
            (".", dir_t, false, true),
        ] {
            assert_eq!(
                exists(path, ty, no_follow),
                json!(want),
                "exists({path:?}, {ty:?}, doNotFollow {no_follow})"
            );
        }
    }

    #[tokio::test]
    async fn a_directory_keeps_its_own_root_mode() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = apply(
            &e,
            empty_dir(),
            "withNewDirectory",
            json!({ "path": "p", "permissions": 0o700 }),
        )
        .await
        .expect("mkdir");
        let sub = apply(&e, dir, "directory", json!({ "path": "p" }))
            .await
            .expect("directory");
        assert_eq!(tree(&sub).root_mode(), 0o700);
        let sub = object(&e, sub);
        let copied = apply(
            &e,
            empty_dir(),
            "withDirectory",
            json!({ "path": "new", "source": { "$id": sub } }),
        )
        .await
        .expect("copy");
        assert!(matches!(
            tree(&copied).entries.get("new"),
            Some(Entry::Dir { mode: 0o700, .. })
        ));
        let existing = apply(
            &e,
            empty_dir(),
            "withNewDirectory",
            json!({ "path": "old", "permissions": 0o750 }),
        )
        .await
        .expect("mkdir");
        let into = apply(
            &e,
            existing,
            "withDirectory",
            json!({ "path": "old", "source": { "$id": sub } }),
        )
        .await
        .expect("copy");
        assert!(
            matches!(tree(&into).entries.get("old"), Some(Entry::Dir { mode: 0o750, .. })),
            "an existing directory keeps its mode"
        );
        let given = apply(
            &e,
            empty_dir(),
            "withDirectory",
            json!({ "path": "out", "source": { "$id": sub }, "permissions": 0o751 }),
        )
        .await
        .expect("copy");
        assert!(matches!(
            tree(&given).entries.get("out"),
            Some(Entry::Dir { mode: 0o751, .. })
        ));
    }

    #[tokio::test]
    async fn errors_use_daggers_wording_and_the_path_as_given() {
        // Ported from Dagger's `TestSync`, `TestDirectoryName`, `TestStat` and `TestWithNewDirectory`
        // (directory_test.go) and `TestSync` (file_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(&e, &["a/f", "b/x"]).await;
        let err = |field: &'static str, args: serde_json::Value| {
            let (e, dir) = (e.clone(), dir.clone());
            async move { apply(&e, dir, field, args).await.expect_err("an error").message }
        };
        assert_eq!(
            err("directory", json!({ "path": "/foo" })).await,
            "/foo: no such file or directory"
        );
        assert_eq!(
            err("directory", json!({ "path": "keep/../this" })).await,
            "keep/../this: no such file or directory"
        );
        assert_eq!(
            err("file", json!({ "path": "to/file.txt" })).await,
            "to/file.txt: no such file or directory"
        );
        assert_eq!(
            err("file", json!({ "path": "a" })).await,
            "path a is a directory, not a file"
        );
        assert_eq!(
            err("directory", json!({ "path": "a/f" })).await,
            "path a/f is a file, not a directory"
        );
        assert_eq!(err("stat", json!({ "path": "" })).await, ": no such file or directory");
        assert_eq!(
            err("stat", json!({ "path": "nope" })).await,
            "nope: no such file or directory"
        );
        assert_eq!(
            err("withNewFile", json!({ "path": "a", "contents": "" })).await,
            "open a: is a directory"
        );
        let b = apply(&e, dir.clone(), "directory", json!({ "path": "b" }))
            .await
            .expect("b");
        let outside = apply(&e, b, "withNewDirectory", json!({ "path": "../c" }))
            .await
            .expect_err("outside");
        assert_eq!(outside.message, "cannot create directory outside parent: ../c");
        let f = DirectoryField::parse("entries", json!({ "path": "nope" }).as_object().expect("o")).expect("field");
        assert_eq!(
            leaf(&e, f, tree(&dir), "/").expect_err("missing").message,
            "nope: no such file or directory"
        );
        assert_eq!(outside_parent("b/../../c").as_deref(), Some("../c"));
        assert_eq!(outside_parent("b/../c"), None);
        assert_eq!(outside_parent("/../c"), None, "an absolute path stays at the root");
    }

    #[tokio::test]
    async fn filter_applies_the_directorys_own_gitignore_files() {
        // Ported from Dagger's `TestFilter` and `TestWithDirectoryIncludeExclude` ("gitignore works",
        // directory_test.go): no `.git` needed; a nested file's rules are relative to its folder and still
        // apply when the patterns leave the file out.
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let dir = with_files(
            &e,
            &[
                "a.txt",
                "b.txt",
                "c.txt.rar",
                "subdir/d.txt",
                "sub2/x.log",
                "sub2/y.txt",
            ],
        )
        .await;
        let dir = apply(
            &e,
            dir,
            "withNewFile",
            json!({ "path": ".gitignore", "contents": "b.txt\nsubdir/\n" }),
        )
        .await
        .expect("gitignore");
        let dir = apply(
            &e,
            dir,
            "withNewFile",
            json!({ "path": "sub2/.gitignore", "contents": "*.log\n" }),
        )
        .await
        .expect("nested gitignore");
        let v = apply(&e, dir.clone(), "filter", json!({ "gitignore": true }))
            .await
            .expect("filter");
        assert_eq!(
            paths(&v),
            [
                ".gitignore",
                "a.txt",
                "c.txt.rar",
                "sub2/",
                "sub2/.gitignore",
                "sub2/y.txt"
            ]
        );
        let v = apply(
            &e,
            dir.clone(),
            "filter",
            json!({ "gitignore": true, "exclude": ["**/.gitignore"] }),
        )
        .await
        .expect("filter");
        assert_eq!(paths(&v), ["a.txt", "c.txt.rar", "sub2/", "sub2/y.txt"]);
        let v = apply(&e, dir.clone(), "filter", json!({})).await.expect("no gitignore");
        assert_eq!(paths(&v), paths(&dir), "rules apply only when asked");
        let src = object(&e, dir);
        let v = apply(
            &e,
            empty_dir(),
            "withDirectory",
            json!({ "path": "copy", "source": { "$id": src }, "gitignore": true }),
        )
        .await
        .expect("withDirectory");
        assert!(!paths(&v).contains(&"copy/b.txt".to_owned()) && paths(&v).contains(&"copy/a.txt".to_owned()));
    }

    #[tokio::test]
    async fn a_bad_path_is_reported_before_the_source_is_evaluated() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        // A source that was never created: evaluating it would fail with "unknown object".
        let never = json!({ "$id": crate::model::ids::Digest::of(b"never created") });
        for (field, args) in [
            ("withFile", json!({ "path": "../x", "source": never })),
            ("withFiles", json!({ "path": "../x", "sources": [never] })),
            ("withDirectory", json!({ "path": "../x", "source": never })),
        ] {
            let err = apply(&e, empty_dir(), field, args).await.expect_err("a bad path");
            assert!(!err.message.contains("unknown object"), "{field}: {}", err.message);
            assert!(err.message.contains("../x"), "{field}: {}", err.message);
        }
    }

    #[test]
    fn unimplemented_builders_have_no_op() {
        assert!(op_of("dockerBuild", json!({})).is_none());
        assert!(op_of("withNewFile", json!({ "path": "f", "contents": "" })).is_some());
    }
}
