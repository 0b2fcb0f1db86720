//! The on-disk, content-addressed store: file contents (blobs), evaluated results, and the calls behind IDs.
//!
//! Layout under the cache directory:
//! - `blobs/<sha256>`: file contents;
//! - `results/<digest>`: the evaluated result of a call (JSON);
//! - `calls/<digest>`: the call behind an ID (JSON).
//!
//! Every write goes to a temporary file in the same directory and is renamed into place, so a killed engine
//! never leaves a half-written entry: an entry is either complete or absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ids::Digest;

/// Where the store lives, and its operations.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cache directory {}: {source}", path.display())]
pub struct StoreError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError {
        path: path.to_owned(),
        source,
    }
}

impl Store {
    /// Opens (creating if needed) a store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for sub in ["blobs", "results", "calls", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(err(&dir))?;
        }
        Ok(Self { root })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The default cache directory: `$DAGGER_RS_CACHE_DIR`, else `$XDG_CACHE_HOME/dagger-rs`, else
    /// `~/.cache/dagger-rs`, else a directory under the system's temporary directory.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("DAGGER_RS_CACHE_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(d);
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(d).join("dagger-rs");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(home).join(".cache").join("dagger-rs");
        }
        std::env::temp_dir().join("dagger-rs-cache")
    }

    /// Writes `bytes` to `path` atomically.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp_dir = self.root.join("tmp");
        let tmp = tmp_dir.join(format!(
            "{}.{}.{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id(),
            unique()
        ));
        let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        f.write_all(bytes).map_err(err(&tmp))?;
        f.sync_all().map_err(err(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(err(path))
    }

    /// Stores file contents, returning their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    /// Stores a file's contents by streaming them (memory does not grow with the file), returning the digest
    /// and size.
    pub fn put_blob_from_file(&self, src: &Path) -> Result<(Digest, u64), StoreError> {
        use sha2::Digest as _;
        use std::io::Read;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("blob-{}", crate::snapshot::unique()));
        let mut input = std::fs::File::open(src).map_err(err(src))?;
        let mut out = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(err(src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(err(&tmp))?;
            size += n as u64;
        }
        drop(out);
        let d = Digest::from_sha256(&hasher.finalize());
        let path = self.blob_path(&d);
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            std::fs::rename(&tmp, &path).map_err(err(&path))?;
        }
        Ok((d, size))
    }

    /// The path of a blob.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.as_str())
    }

    /// Reads a blob.
    pub fn get_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        std::fs::read(&path).map_err(err(&path))
    }

    /// Stores a JSON record in `kind` (`results` or `calls`).
    pub fn put_json<T: serde::Serialize>(&self, kind: &str, d: &Digest, value: &T) -> Result<(), StoreError> {
        let path = self.root.join(kind).join(d.as_str());
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(&path, &bytes)
    }

    /// Reads a JSON record; `None` when absent or unreadable (a damaged entry is treated as a miss).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, kind: &str, d: &Digest) -> Option<T> {
        let bytes = std::fs::read(self.root.join(kind).join(d.as_str())).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Total size of the store's files, in bytes.
    pub fn size(&self) -> u64 {
        walk_size(&self.root)
    }

    /// Removes the least recently modified results and blobs until the store is at most `max_bytes`.
    /// Calls (the ID registry) are kept: they are small, and IDs must stay loadable. Returns bytes freed.
    pub fn prune(&self, max_bytes: u64) -> Result<u64, StoreError> {
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
        for kind in ["results", "blobs", "tmp"] {
            let dir = self.root.join(kind);
            let rd = std::fs::read_dir(&dir).map_err(err(&dir))?;
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((t, m.len(), e.path()));
                }
            }
        }
        let mut total = self.size();
        let mut freed = 0;
        entries.sort();
        for (_, len, path) in entries {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(len);
                freed += len;
            }
        }
        Ok(freed)
    }
}

fn walk_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_and_records_round_trip_and_prune() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let d = store.put_blob(b"hello").expect("put");
        assert_eq!(store.get_blob(&d).expect("get"), b"hello");
        store
            .put_json("results", &d, &serde_json::json!({"k": 1}))
            .expect("put json");
        assert_eq!(
            store.get_json::<serde_json::Value>("results", &d),
            Some(serde_json::json!({"k": 1}))
        );
        let freed = store.prune(0).expect("prune");
        assert!(freed > 0);
        assert!(store.get_json::<serde_json::Value>("results", &d).is_none());
        assert!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none());
    }
}
