//! Scratch folders under the cache directory's `tmp/`: each is a guard that removes its folder when dropped,
//! so an error, a panic or a cancelled request leaves nothing behind (what an engine that dies leaves is
//! collected by the next one to start, see [`crate::worker::cleanup`]).

use std::path::{Path, PathBuf};

use crate::store::Store;
use crate::worker::snapshot;

/// A scratch folder, removed when dropped unless kept with [`Scratch::keep_as`].
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh path `tmp/<what>-<pid>-<n>-<random>` in `store`, not created yet (whoever fills it creates it).
    pub(crate) fn new(store: &Store, what: &str) -> Scratch {
        Scratch {
            path: store.root().join("tmp").join(format!("{what}-{}", snapshot::unique())),
        }
    }

    /// [`Scratch::new`], created as an empty directory.
    pub(crate) fn create(store: &Store, what: &str) -> std::io::Result<Scratch> {
        let scratch = Scratch::new(store, what);
        std::fs::create_dir_all(&scratch.path)?;
        Ok(scratch)
    }

    /// Where it is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the folder to `target`, which then outlives the guard. When the rename fails (`target` exists
    /// already, made by someone else) the folder is removed and the error returned.
    pub(crate) fn keep_as(self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok() {
            snapshot::remove_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path().join("cache")).expect("store")
    }

    #[test]
    fn a_scratch_folder_is_removed_on_every_path_unless_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(&dir);
        let made = {
            let s = Scratch::create(&store, "t").expect("create");
            std::fs::write(s.path().join("f"), b"x").expect("write");
            s.path().to_owned()
        };
        assert!(!made.exists(), "removed when dropped");

        let panicked = std::panic::catch_unwind(|| {
            let s = Scratch::create(&store, "t").expect("create");
            let path = s.path().to_owned();
            std::fs::create_dir_all(path.join("a/b")).expect("mkdir");
            std::panic::panic_any(path)
        });
        let path = panicked.expect_err("panicked").downcast::<PathBuf>().expect("path");
        assert!(!path.exists(), "removed when a panic unwinds");

        let kept = dir.path().join("kept");
        let s = Scratch::create(&store, "t").expect("create");
        let from = s.path().to_owned();
        s.keep_as(&kept).expect("keep");
        assert!(kept.is_dir() && !from.exists());

        let lost = Scratch::create(&store, "t").expect("create");
        let from = lost.path().to_owned();
        std::fs::write(from.join("f"), b"x").expect("write");
        std::fs::write(kept.join("g"), b"y").expect("write");
        assert!(lost.keep_as(&kept).is_err(), "a non-empty target is not replaced");
        assert!(!from.exists(), "the loser's folder is removed");
    }

    #[test]
    fn a_scratch_path_is_named_after_its_owner() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Scratch::new(&store(&dir), "exec");
        let name = s.path().file_name().and_then(|n| n.to_str()).expect("name").to_owned();
        assert!(name.starts_with("exec-"), "{name}");
        assert_eq!(
            crate::worker::collected::owner_pid(&name),
            Some(std::process::id()),
            "collection can tell whose it is"
        );
        assert!(!s.path().exists(), "not created until filled");
    }
}
