//! Cache volumes on the host: where each volume's directory lives, and the sharing modes — a `LOCKED`
//! volume admits one exec at a time, a `PRIVATE` one gives a second concurrent user a fresh, throwaway
//! directory, a `SHARED` one is used by all at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::model::error::FieldError;
use crate::model::ids::Digest;
use crate::store::Store;

/// The cache volumes in use by one engine's execs.
#[derive(Default)]
pub struct CacheVolumes {
    private_holders: Mutex<HashSet<String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The `PRIVATE` cache volumes one exec holds, and those it must replace by a fresh, throwaway directory
/// because another exec holds them; released on drop.
pub struct CacheUse<'a> {
    volumes: &'a CacheVolumes,
    held: Vec<String>,
    /// Keys of `PRIVATE` volumes in use elsewhere: this exec gets a fresh directory for each.
    pub fresh: HashSet<String>,
}

impl Drop for CacheUse<'_> {
    fn drop(&mut self) {
        if let Ok(mut holders) = self.volumes.private_holders.lock() {
            for k in &self.held {
                holders.remove(k);
            }
        }
    }
}

impl CacheVolumes {
    /// Takes the locks and use counts an exec needs for its cache mounts, given as `(key, sharing)` pairs.
    pub async fn acquire(&self, mounts: &[(&str, &str)]) -> (Vec<tokio::sync::OwnedMutexGuard<()>>, CacheUse<'_>) {
        let mut guards = Vec::new();
        let mut held = Vec::new();
        let mut fresh = HashSet::new();
        for &(key, sharing) in mounts {
            match sharing {
                "LOCKED" => {
                    let lock = self
                        .locks
                        .lock()
                        .map(|mut l| l.entry(key.to_owned()).or_default().clone())
                        .unwrap_or_default();
                    guards.push(lock.lock_owned().await);
                }
                "PRIVATE" => {
                    let taken = self
                        .private_holders
                        .lock()
                        .map(|mut h| !h.insert(key.to_owned()))
                        .unwrap_or(true);
                    if taken {
                        fresh.insert(key.to_owned());
                    } else {
                        held.push(key.to_owned());
                    }
                }
                _ => {}
            }
        }
        (
            guards,
            CacheUse {
                volumes: self,
                held,
                fresh,
            },
        )
    }
}

/// The host directory of a cache volume for one exec, and whether it was just created (to seed it): a
/// `fresh` one is `c<n>` in the exec's `scratch` folder, the others live under the store's `cache-volumes/`.
pub fn volume_dir(
    store: &Store,
    key: &str,
    fresh: bool,
    scratch: &Path,
    n: usize,
) -> Result<(PathBuf, bool), FieldError> {
    if fresh {
        let dir = scratch.join(format!("c{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| FieldError::new(format!("cannot create {}: {e}", dir.display())))?;
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
    std::fs::create_dir_all(&base).map_err(|e| FieldError::new(format!("cannot create {}: {e}", base.display())))?;
    let tmp = base.join(format!("new-{}", crate::worker::snapshot::unique()));
    std::fs::create_dir_all(&tmp).map_err(|e| FieldError::new(format!("cannot create {}: {e}", tmp.display())))?;
    if std::fs::rename(&tmp, &data).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok((data, false));
    }
    Ok((data, true))
}
