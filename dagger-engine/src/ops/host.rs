//! The host: paths relative to the session's workdir, host directories and files read into the store when
//! the object is created (so their content is part of its identity), and exports back to the host.

use std::path::{Path, PathBuf};

use crate::model::ignore::GitignoreRules;
use crate::model::tree::{FileEntry, PathError, Tree, matches_patterns};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::HostField;
use crate::ops::op::{Op, value};
use crate::worker::snapshot::WalkFilter;

/// A host path: absolute as given, relative ones against the session's workdir.
pub(crate) fn host_path(engine: &Engine, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        engine.config.workdir.join(p)
    }
}

fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644)
}

/// The op of a `Host` builder. Host content is read when the object is created (its digest is part of the
/// call), so computing it later means the result was lost: the object has to be created again.
pub(crate) fn op(field: HostField) -> Option<Op> {
    match field {
        HostField::Directory(_) | HostField::File(_) => value(Err(OpError::new(
            "host content is read when the object is created; create it again in this session",
        ))),
        HostField::Service(a) => crate::ops::service::host_service(a),
        HostField::Tunnel(a) => crate::ops::service::host_tunnel(a),
        _ => None,
    }
}

/// Reads a host file into the store: its name and entry (with its modification time, as Dagger keeps it).
pub(crate) fn read_host_file(engine: &Engine, path: &Path) -> Result<(String, FileEntry), OpError> {
    use std::os::unix::fs::MetadataExt;
    let bytes =
        std::fs::read(path).map_err(|e| OpError::new(format!("cannot read host file {}: {e}", path.display())))?;
    let mode = file_mode(path);
    let mtime = std::fs::metadata(path).ok().map(|m| m.mtime());
    let blob = engine.store.put_blob(&bytes)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        name,
        FileEntry {
            mode,
            blob,
            size: bytes.len() as u64,
            mtime,
        },
    ))
}

/// The nearest directory at or above `dir` holding a `.git` (a repository's root), if any.
fn git_root(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .find(|d| std::fs::symlink_metadata(d.join(".git")).is_ok())
        .map(Path::to_owned)
}

/// `a/b` from `a` and `b`, either possibly empty.
fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}/{b}"),
    }
}

/// What a host directory read keeps, decided while it walks (so what is left out is never read): not what
/// `exclude` names, only files `include` names (when given), and with gitignore rules, nothing they ignore.
struct HostFilter<'a> {
    exclude: &'a [String],
    include: &'a [String],
    /// The rules so far, with the directory's path from the repository's root (`None`: no gitignore).
    gitignore: Option<(GitignoreRules, String)>,
}

impl WalkFilter for HostFilter<'_> {
    fn enter(&mut self, rel: &str, host: &Path) {
        // Each folder's `.gitignore` applies below it, whether or not the file itself is read.
        if let Some((rules, prefix)) = &mut self.gitignore
            && let Ok(contents) = std::fs::read_to_string(host.join(".gitignore"))
        {
            rules.add(&join_rel(prefix, rel), &contents);
        }
    }

    fn keep(&mut self, rel: &str, is_dir: bool) -> bool {
        if matches_patterns(rel, self.exclude) {
            return false;
        }
        if let Some((rules, prefix)) = &self.gitignore
            && rules.ignored(&join_rel(prefix, rel), is_dir)
        {
            return false;
        }
        is_dir || self.include.is_empty() || matches_patterns(rel, self.include)
    }
}

/// Reads a host directory into a tree (filtered), storing file contents as blobs and keeping files'
/// modification times (as Dagger does). With `gitignore`, the nearest directory at or above `root` holding
/// `.git` is the repository's root (none: no rules), and every `.gitignore` from there down applies, relative
/// to its own folder, even one the filters leave out; a `root` that is itself ignored is not found. `given` is
/// the path as the client wrote it, for errors.
pub(crate) fn read_host_dir(
    engine: &Engine,
    root: &Path,
    given: &str,
    include: &[String],
    exclude: &[String],
    gitignore: bool,
) -> Result<(Tree, String), OpError> {
    let meta = std::fs::metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OpError::from(PathError::NotFound(given.to_owned())),
        _ => OpError::new(format!("cannot read host directory {}: {e}", root.display())),
    })?;
    if !meta.is_dir() {
        return Err(PathError::NotADirectory(given.to_owned()).into());
    }
    let mut filter = HostFilter {
        exclude,
        include,
        gitignore: None,
    };
    if gitignore && let Some(repo) = git_root(root) {
        let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned());
        let prefix = canonical
            .strip_prefix(&repo)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The `.gitignore` files above the directory, from the repository's root down (its own is read by the
        // walk).
        let mut rules = GitignoreRules::default();
        let mut dir = repo.clone();
        let mut rel = String::new();
        for comp in prefix.split('/').filter(|c| !c.is_empty()) {
            if let Ok(contents) = std::fs::read_to_string(dir.join(".gitignore")) {
                rules.add(&rel, &contents);
            }
            dir.push(comp);
            rel = join_rel(&rel, comp);
        }
        if rules.ignored_or_below_ignored(&prefix, true) {
            return Err(PathError::NotFound(given.to_owned()).into());
        }
        filter.gitignore = Some((rules, prefix));
    }
    let tree = crate::worker::snapshot::read_tree_with(&engine.store, root, &mut filter, true)
        .map_err(|e| OpError::new(e.to_string()))?;
    // The walk left out what is excluded and the files not included; this drops the directories left with
    // nothing included.
    let tree = tree.filter(include, exclude);
    let name = root
        .file_name()
        .map(|n| format!("{}/", n.to_string_lossy()))
        .unwrap_or_else(|| "/".to_owned());
    Ok((tree, name))
}

pub(crate) fn write_file(engine: &Engine, entry: &FileEntry, target: &Path) -> Result<(), OpError> {
    crate::worker::snapshot::write_file(&engine.store, entry, target).map_err(|e| OpError::new(e.to_string()))
}

pub(crate) fn export_tree(engine: &Engine, tree: &Tree, target: &Path, wipe: bool) -> Result<(), OpError> {
    if wipe && target.exists() {
        std::fs::remove_dir_all(target).map_err(|e| OpError::new(format!("cannot wipe {}: {e}", target.display())))?;
    }
    crate::worker::snapshot::write_tree(&engine.store, tree, target, "", None).map_err(|e| OpError::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    //! Host paths and reads on a temporary directory: no root.

    use super::*;
    use crate::ops::op::testing::engine;

    #[test]
    fn host_paths_are_relative_to_the_session_workdir() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        assert_eq!(host_path(&e, "a/b"), tmp.path().join("a/b"));
        assert_eq!(host_path(&e, "/etc/hosts"), PathBuf::from("/etc/hosts"));
    }

    #[test]
    fn host_files_are_stored_with_their_name_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let path = tmp.path().join("run.sh");
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        let (name, entry) = read_host_file(&e, &path).expect("read");
        assert_eq!((name.as_str(), entry.mode, entry.size), ("run.sh", 0o750, 10));
        assert_eq!(e.store.get_blob(&entry.blob).expect("blob"), b"#!/bin/sh\n");
        let err = read_host_file(&e, &tmp.path().join("missing")).expect_err("missing");
        assert!(err.message.starts_with("cannot read host file"), "{}", err.message);
    }

    #[test]
    fn host_directories_are_filtered_and_must_be_directories() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let root = tmp.path().join("src");
        std::fs::create_dir_all(root.join("target")).expect("mkdir");
        std::fs::write(root.join("main.rs"), "fn main() {}").expect("write");
        std::fs::write(root.join("target/out"), "x").expect("write");
        let (tree, name) = read_host_dir(&e, &root, "src", &[], &["target".to_owned()], false).expect("read");
        assert_eq!(name, "src/");
        assert_eq!(tree.entries.keys().collect::<Vec<_>>(), ["main.rs"]);
        let err = read_host_dir(&e, &root.join("main.rs"), "src/main.rs", &[], &[], false).expect_err("a file");
        assert_eq!(err.message, "path src/main.rs is a file, not a directory");
        let err = read_host_dir(&e, &root.join("nope"), "src/nope", &[], &[], false).expect_err("missing");
        assert_eq!(err.message, "src/nope: no such file or directory");
    }

    #[test]
    fn host_builders_cannot_be_computed_later() {
        assert!(op(HostField::Id).is_none());
        assert!(
            op(HostField::File(crate::ops::fields::HostFile {
                path: "f".into(),
                no_cache: false
            }))
            .is_some()
        );
    }

    /// Dagger's `TestDirectoryGitIgnore` tree (host_test.go) under `dir`.
    fn daggers_repo(dir: &Path) {
        let write = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
        write(".gitignore", "**.txt\n.git/\n!subdir/e.txt\n*.md\ninternal/foo/\n");
        for (rel, text) in [
            ("b.md", "2"),
            ("c.txt.rar", "3"),
            ("subdir/b.md", "1"),
            ("subdir/e.txt", "2"),
            ("subdir/g.txt", "6"),
            ("subdir/h.yaml", "6"),
            ("subdir2/.gitignore", "*.yaml\n.gitignore\n"),
            ("subdir2/foo.go", "1"),
            ("subdir2/bar.txt", "1"),
            ("subdir2/baz.md", "1"),
            ("subdir2/bool.yaml", "1"),
        ] {
            write(rel, text);
        }
    }

    fn listing(tree: &Tree, dir: &str) -> Vec<String> {
        tree.list(dir).expect("list")
    }

    #[test]
    fn gitignore_rules_apply_from_the_repository_root_down() {
        // Ported from Dagger's `TestDirectoryGitIgnore` (host_test.go).
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let repo = tmp.path().join("repo");
        daggers_repo(&repo);
        let read = |path: &Path, exclude: &[&str], gitignore: bool| {
            let exclude: Vec<String> = exclude.iter().map(|s| (*s).to_owned()).collect();
            read_host_dir(&e, path, "given", &[], &exclude, gitignore)
        };
        let (all, _) = read(&repo, &[], false).expect("read");
        assert_eq!(
            listing(&all, ""),
            [".git/", ".gitignore", "b.md", "c.txt.rar", "subdir/", "subdir2/"],
            "no gitignore by default"
        );
        let (t, _) = read(&repo, &[], true).expect("read");
        assert_eq!(listing(&t, ""), [".gitignore", "c.txt.rar", "subdir/", "subdir2/"]);
        assert_eq!(listing(&t, "subdir"), ["e.txt", "h.yaml"]);
        assert_eq!(
            listing(&t, "subdir2"),
            ["foo.go"],
            "a nested file's rules are relative to its folder"
        );
        let (t, _) = read(&repo.join("subdir"), &[], true).expect("read");
        assert_eq!(
            listing(&t, ""),
            ["e.txt", "h.yaml"],
            "a parent's rules apply to a path below it"
        );
        let (t, _) = read(&repo, &[".gitignore"], true).expect("read");
        assert_eq!(listing(&t, ""), ["c.txt.rar", "subdir/", "subdir2/"]);
        assert_eq!(
            listing(&t, "subdir"),
            ["e.txt", "h.yaml"],
            "an excluded .gitignore still applies"
        );

        // Without `.git` there is no repository, so no rules.
        let plain = tmp.path().join("plain");
        std::fs::create_dir_all(&plain).expect("mkdir");
        for (rel, text) in [(".gitignore", "**/**"), ("bar.txt", "1"), ("foo.go", "1")] {
            std::fs::write(plain.join(rel), text).expect("write");
        }
        let (t, _) = read(&plain, &[], true).expect("read");
        assert_eq!(listing(&t, ""), [".gitignore", "bar.txt", "foo.go"]);

        // An ignored directory is not read at all, and asking for it finds nothing.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(other.join(".git")).expect("mkdir");
        std::fs::create_dir_all(other.join("foo")).expect("mkdir");
        std::fs::create_dir_all(other.join("bar")).expect("mkdir");
        for (rel, text) in [
            (".gitignore", "bar/\nbaz.txt\n"),
            ("foo/foo.txt", "1"),
            ("bar/bar.txt", "1"),
            ("baz.txt", "1"),
        ] {
            std::fs::write(other.join(rel), text).expect("write");
        }
        let (t, _) = read(&other, &[], true).expect("read");
        assert_eq!(listing(&t, ""), [".git/", ".gitignore", "foo/"]);
        let (t, _) = read(&other.join("foo"), &[], true).expect("read");
        assert_eq!(listing(&t, ""), ["foo.txt"]);
        let err = read_host_dir(&e, &other.join("bar"), "other/bar", &[], &[], true).expect_err("ignored");
        assert_eq!(err.message, "other/bar: no such file or directory");
    }

    #[test]
    fn host_files_keep_their_modification_times() {
        let tmp = tempfile::tempdir().expect("dir");
        let e = engine(&tmp);
        let root = tmp.path().join("src");
        std::fs::create_dir_all(&root).expect("mkdir");
        let path = root.join("f");
        std::fs::write(&path, "x").expect("write");
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(499_162_500);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(when))
            .expect("set the time");
        let (tree, _) = read_host_dir(&e, &root, "src", &[], &[], false).expect("read");
        let Some(crate::model::tree::Entry::File(f)) = tree.entries.get("f") else {
            panic!("a file")
        };
        assert_eq!(f.mtime, Some(499_162_500));
        assert_eq!(read_host_file(&e, &path).expect("read").1.mtime, Some(499_162_500));
        // Written out again (an export, a copy into a container), the file has its time back.
        let out = tmp.path().join("out");
        export_tree(&e, &tree, &out, false).expect("export");
        let written = std::fs::metadata(out.join("f"))
            .and_then(|m| m.modified())
            .expect("time");
        assert_eq!(written, when);
        // The time is no part of the content's digest.
        let mut touched = tree.clone();
        if let Some(crate::model::tree::Entry::File(f)) = touched.entries.get_mut("f") {
            f.mtime = Some(1);
        }
        assert_eq!(touched.digest(), tree.digest());
    }
}
