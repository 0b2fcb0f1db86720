//! The host: paths relative to the session's workdir, host directories and files read into the store when
//! the object is created (so their content is part of its identity), and exports back to the host.

use std::path::{Path, PathBuf};

use crate::model::tree::{FileEntry, Tree};
use crate::ops::engine::Engine;
use crate::ops::error::OpError;
use crate::ops::fields::HostField;
use crate::ops::op::{Op, value};

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
        _ => None,
    }
}

/// Reads a host file into the store: its name and entry.
pub(crate) fn read_host_file(engine: &Engine, path: &Path) -> Result<(String, FileEntry), OpError> {
    let bytes =
        std::fs::read(path).map_err(|e| OpError::new(format!("cannot read host file {}: {e}", path.display())))?;
    let mode = file_mode(path);
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
            mtime: None,
        },
    ))
}

/// Reads a host directory into a tree (filtered), storing file contents as blobs.
pub(crate) fn read_host_dir(
    engine: &Engine,
    root: &Path,
    include: &[String],
    exclude: &[String],
    gitignore: bool,
) -> Result<(Tree, String), OpError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| OpError::new(format!("cannot read host directory {}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(OpError::new(format!("host path {} is not a directory", root.display())));
    }
    let tree = crate::worker::snapshot::read_tree(&engine.store, root).map_err(|e| OpError::new(e.to_string()))?;
    let mut tree = tree.filter(include, exclude);
    if gitignore {
        tree = without_gitignored(root, &tree)?;
    }
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

/// `tree` (read from `root`) without what `root/.gitignore` ignores, as git reads it: negations (`!keep.log`)
/// re-include, a trailing `/` matches directories only, a leading `/` anchors at the root, and nothing below
/// an ignored directory comes back. Without a `.gitignore`, the tree as it is.
fn without_gitignored(root: &Path, tree: &Tree) -> Result<Tree, OpError> {
    let file = root.join(".gitignore");
    if !file.is_file() {
        return Ok(tree.clone());
    }
    let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
    // Lines that are not valid patterns are skipped, as git skips them.
    let _ = builder.add(&file);
    let matcher = builder
        .build()
        .map_err(|e| OpError::new(format!("cannot use {}: {e}", file.display())))?;
    Ok(tree.without(|path, is_dir| matcher.matched_path_or_any_parents(path, is_dir).is_ignore()))
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
        let (tree, name) = read_host_dir(&e, &root, &[], &["target".to_owned()], false).expect("read");
        assert_eq!(name, "src/");
        assert_eq!(tree.entries.keys().collect::<Vec<_>>(), ["main.rs"]);
        let err = read_host_dir(&e, &root.join("main.rs"), &[], &[], false).expect_err("a file");
        assert!(err.message.contains("is not a directory"), "{}", err.message);
        assert!(read_host_dir(&e, &root.join("nope"), &[], &[], false).is_err());
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
}
