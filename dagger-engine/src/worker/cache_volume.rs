//! Cache volumes on the host: where each volume's directory lives, and the sharing modes — a `LOCKED`
//! volume admits one exec at a time, a `PRIVATE` one gives a second concurrent user a fresh, throwaway
//! directory, a `SHARED` one is used by all at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::ids::Digest;
use crate::store::Store;

/// A cache volume's directory could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot create {}: {source}", path.display())]
pub(crate) struct CacheVolumeError {
    /// The directory.
    path: PathBuf,
    /// Why.
    source: std::io::Error,
}

impl CacheVolumeError {
    fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| CacheVolumeError {
            path: path.to_owned(),
            source,
        }
    }
}

/// The cache volumes in use by one engine's execs.
#[derive(Default)]
pub(crate) struct CacheVolumes {
    private_holders: Arc<Mutex<HashSet<String>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Where the lock files of `LOCKED` volumes live, shared by every engine on the cache directory (`None`:
    /// this engine's execs only take turns among themselves).
    lock_dir: Option<PathBuf>,
}

/// The cache volumes one exec uses: the locks of its `LOCKED` volumes, the `PRIVATE` ones it holds, and those
/// it must replace by a fresh, throwaway directory because another exec holds them; all released on drop.
pub(crate) struct CacheVolumeLease {
    private_holders: Arc<Mutex<HashSet<String>>>,
    _locks: Vec<tokio::sync::OwnedMutexGuard<()>>,
    /// The lock files held (an exclusive `flock` each, released when closed).
    _files: Vec<std::fs::File>,
    held: Vec<String>,
    /// Keys of `PRIVATE` volumes in use elsewhere: this exec gets a fresh directory for each.
    pub fresh: HashSet<String>,
}

impl Drop for CacheVolumeLease {
    fn drop(&mut self) {
        let mut holders = self.private_holders.lock();
        for k in &self.held {
            holders.remove(k);
        }
    }
}

impl CacheVolumes {
    /// The volumes of an engine whose `LOCKED` volumes also take turns with every other engine, through a
    /// `lock` file beside each volume's data in `lock_dir` (the cache directory's `cache-volumes/`).
    pub(crate) fn shared_through(lock_dir: PathBuf) -> Self {
        Self {
            lock_dir: Some(lock_dir),
            ..Self::default()
        }
    }

    /// Waits for the lock file of `key` (an exclusive `flock`, polled so a cancelled wait holds nothing).
    async fn lock_file(&self, key: &str) -> Result<Option<std::fs::File>, CacheVolumeError> {
        let Some(dir) = &self.lock_dir else {
            return Ok(None);
        };
        // Beside the volume's `data/`, in the folder every engine finds the volume in.
        let base = dir.join(Digest::of(key.as_bytes()).as_str());
        std::fs::create_dir_all(&base).map_err(CacheVolumeError::at(&base))?;
        let path = base.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(CacheVolumeError::at(&path))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Some(file)),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => return Err(CacheVolumeError::at(&path)(e.into())),
            }
        }
    }

    /// Takes the locks and use counts an exec needs for its cache mounts, given as `(key, sharing)` pairs. A
    /// volume mounted twice counts once (with its strictest mode), and locks are taken in the order of their
    /// keys, so two execs never wait on each other.
    pub(crate) async fn acquire(&self, mounts: &[(&str, &str)]) -> Result<CacheVolumeLease, CacheVolumeError> {
        let strictness = |sharing: &str| match sharing {
            "LOCKED" => 2,
            "PRIVATE" => 1,
            _ => 0,
        };
        let mut volumes: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
        for &(key, sharing) in mounts {
            let slot = volumes.entry(key).or_insert(sharing);
            if strictness(sharing) > strictness(slot) {
                *slot = sharing;
            }
        }
        let mut guards = Vec::new();
        let mut files = Vec::new();
        let mut held = Vec::new();
        let mut fresh = HashSet::new();
        for (key, sharing) in volumes {
            match sharing {
                "LOCKED" => {
                    let lock = self.locks.lock().entry(key.to_owned()).or_default().clone();
                    guards.push(lock.lock_owned().await);
                    files.extend(self.lock_file(key).await?);
                }
                "PRIVATE" => {
                    let taken = !self.private_holders.lock().insert(key.to_owned());
                    if taken {
                        fresh.insert(key.to_owned());
                    } else {
                        held.push(key.to_owned());
                    }
                }
                _ => {}
            }
        }
        Ok(CacheVolumeLease {
            private_holders: self.private_holders.clone(),
            _locks: guards,
            _files: files,
            held,
            fresh,
        })
    }
}

/// The host directory of a cache volume for one exec, and whether it was just created (to seed it): a
/// `fresh` one is `c<n>` in the exec's `scratch` folder, the others live under the store's `cache-volumes/`.
pub(crate) fn volume_dir(
    store: &Store,
    key: &str,
    fresh: bool,
    scratch: &Path,
    n: usize,
) -> Result<(PathBuf, bool), CacheVolumeError> {
    if fresh {
        let dir = scratch.join(format!("c{n}"));
        std::fs::create_dir_all(&dir).map_err(CacheVolumeError::at(&dir))?;
        return Ok((dir, true));
    }
    let base = store
        .root()
        .join("cache-volumes")
        .join(Digest::of(key.as_bytes()).as_str());
    let data = base.join("data");
    if data.is_dir() {
        return Ok((data, false));
    }
    std::fs::create_dir_all(&base).map_err(CacheVolumeError::at(&base))?;
    let tmp = base.join(format!("new-{}", crate::worker::snapshot::unique()));
    std::fs::create_dir_all(&tmp).map_err(CacheVolumeError::at(&tmp))?;
    if std::fs::rename(&tmp, &data).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok((data, false));
    }
    Ok((data, true))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn waits(volumes: &CacheVolumes, mounts: &[(&str, &str)]) -> bool {
        tokio::time::timeout(Duration::from_millis(300), volumes.acquire(mounts))
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_locked_volume_admits_one_exec_at_a_time_even_after_a_panic_elsewhere() {
        let volumes = Arc::new(CacheVolumes::default());
        let first = volumes.acquire(&[("k", "LOCKED")]).await.expect("lease");
        assert!(waits(&volumes, &[("k", "LOCKED")]).await, "a second user waits");
        assert!(
            !waits(&volumes, &[("other", "LOCKED")]).await,
            "another volume does not"
        );
        // A thread that panics while holding the lock table does not make the next user get a fresh lock.
        let v = volumes.clone();
        let panicked = std::thread::spawn(move || {
            let _table = v.locks.lock();
            panic!("while holding the lock table");
        })
        .join();
        assert!(panicked.is_err());
        assert!(waits(&volumes, &[("k", "LOCKED")]).await, "still one at a time");
        drop(first);
        assert!(!waits(&volumes, &[("k", "LOCKED")]).await, "free once released");
    }

    #[tokio::test]
    async fn a_volume_mounted_twice_is_locked_once_and_engines_on_one_cache_take_turns() {
        let dir = tempfile::tempdir().expect("dir");
        let one = CacheVolumes::shared_through(dir.path().to_owned());
        let other = CacheVolumes::shared_through(dir.path().to_owned());
        // The same LOCKED volume at two paths of one exec: no waiting on itself.
        let first = tokio::time::timeout(Duration::from_secs(5), one.acquire(&[("k", "LOCKED"), ("k", "SHARED")]))
            .await
            .expect("no deadlock")
            .expect("lease");
        assert!(
            waits(&other, &[("k", "LOCKED")]).await,
            "another engine on the cache waits"
        );
        assert!(!waits(&other, &[("j", "LOCKED")]).await, "for that volume only");
        drop(first);
        assert!(!waits(&other, &[("k", "LOCKED")]).await, "and goes once it is released");
        assert!(
            dir.path().join(Digest::of(b"k").as_str()).join("lock").is_file(),
            "the lock file sits beside the volume's data"
        );
    }

    #[tokio::test]
    async fn a_private_volume_in_use_gives_the_next_user_a_fresh_directory_until_released() {
        let volumes = CacheVolumes::default();
        let first = volumes
            .acquire(&[("p", "PRIVATE"), ("s", "SHARED")])
            .await
            .expect("lease");
        assert!(first.fresh.is_empty());
        let second = volumes
            .acquire(&[("p", "PRIVATE"), ("s", "SHARED")])
            .await
            .expect("lease");
        assert_eq!(second.fresh, HashSet::from(["p".to_owned()]));
        drop(second);
        let third = volumes.acquire(&[("p", "PRIVATE")]).await.expect("lease");
        assert_eq!(third.fresh.len(), 1, "the first user still holds it");
        drop(third);
        drop(first);
        let fourth = volumes.acquire(&[("p", "PRIVATE")]).await.expect("lease");
        assert!(fourth.fresh.is_empty(), "released with its first user");
    }

    #[test]
    fn volume_directories_are_made_once_and_fresh_ones_in_the_scratch_folder() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path().join("cache")).expect("store");
        let scratch = dir.path().join("scratch");
        let (data, created) = volume_dir(&store, "k", false, &scratch, 0).expect("dir");
        assert!(created && data.is_dir());
        assert_eq!(
            volume_dir(&store, "k", false, &scratch, 0).expect("again"),
            (data.clone(), false)
        );
        let (fresh, created) = volume_dir(&store, "k", true, &scratch, 3).expect("fresh");
        assert_eq!((fresh, created), (scratch.join("c3"), true));
        assert_ne!(volume_dir(&store, "other", false, &scratch, 0).expect("other").0, data);
    }
}
