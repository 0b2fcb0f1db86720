//! The on-disk, content-addressed store: file contents (blobs), evaluated results, and the calls behind IDs.
//!
//! Layout under the cache directory:
//! - `blobs/<sha256>`: file contents;
//! - `results/<digest>`: the evaluated result of a call (JSON);
//! - `calls/<digest>`: the call behind an ID (JSON);
//! - `layers/<sha256>`: an image layer blob extracted into a directory (overlayfs upper format, see
//!   [`crate::worker::oci::layer`]), named after the compressed blob's digest;
//! - `packed/<digest>`: which blob a layer directory was packed into, so exports do not pack it again;
//! - `tmp/`: entries being written, and the scratch directories of execs;
//! - `runtime/`: the OCI runtime's container state; `cache-volumes/`: cache volumes; `engines/`: one lock file
//!   per engine process using the directory (see [`crate::worker::cleanup`]).
//!
//! The cache directory is private to the engine's user: [`Store::open`] creates it (and each directory above)
//! with mode 0700, and repairs a wider mode. Image layers keep their set-user-ID files, so a cache directory
//! other users could enter would let them run those files as root.
//!
//! Every write goes to a temporary file (or directory) in `tmp/` and is renamed into place, so a killed engine
//! never leaves a half-written entry: an entry is either complete or absent. Streamed blobs (image layers) are
//! hashed while written and only renamed into `blobs/` once their digest is the one expected.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::model::ids::Digest;

/// The directories under the cache directory; each is created private (0700) by [`Store::open`].
const SUBDIRS: [&str; 9] = [
    "blobs",
    "results",
    "calls",
    "layers",
    "packed",
    "tmp",
    "runtime",
    "cache-volumes",
    "engines",
];

/// Creates `dir` with mode 0700, or checks an existing one: it must be a directory owned by the engine's user,
/// and a mode wider than 0700 is narrowed. Only the cache directory itself (`follow`) may be reached through a
/// symbolic link.
fn private_dir(dir: &Path, follow: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(dir)(e)),
    }
    let meta = if follow {
        std::fs::metadata(dir)
    } else {
        std::fs::symlink_metadata(dir)
    }
    .map_err(err(dir))?;
    let refuse = |why: String| StoreError {
        path: dir.to_owned(),
        source: std::io::Error::other(why),
    };
    if !meta.is_dir() {
        return Err(refuse(
            "not a directory: remove it, or choose another cache directory with --cache-dir or DAGGER_RS_CACHE_DIR"
                .into(),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "owned by uid {}, not by the engine's user (uid {me}); that user could reach the files of image \
             layers in it, set-user-ID ones included: `chown -R {me} {}` it, or choose another cache directory \
             with --cache-dir or DAGGER_RS_CACHE_DIR",
            meta.uid(),
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err(dir))?;
    }
    Ok(())
}

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
    /// Opens (creating if needed) a store at `root`. The directory and its subdirectories are made private to
    /// the engine's user (mode 0700; a wider mode is repaired); a directory owned by another user is refused,
    /// since that user could reach the set-user-ID files image layers carry.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err(parent))?;
        }
        private_dir(&root, true)?;
        for sub in SUBDIRS {
            private_dir(&root.join(sub), false)?;
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

    /// Writes `bytes` to `path` atomically; `durable` also waits for the data to reach the disk first.
    fn write_atomic(&self, path: &Path, bytes: &[u8], durable: bool) -> Result<(), StoreError> {
        self.write_atomic_mode(path, bytes, 0o644, durable)
    }

    /// Writes `bytes` to `path` atomically, as a file created with `mode` (less the umask); `durable` also
    /// waits for the data to reach the disk first.
    fn write_atomic_mode(&self, path: &Path, bytes: &[u8], mode: u32, durable: bool) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp_dir = self.root.join("tmp");
        let tmp = tmp_dir.join(format!(
            "{}.{}.{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
            std::process::id(),
            unique()
        ));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(err(&tmp))?;
        f.write_all(bytes).map_err(err(&tmp))?;
        if durable {
            f.sync_all().map_err(err(&tmp))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).map_err(err(path))
    }

    /// Stores file contents, returning their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            self.write_atomic(&path, bytes, true)?;
        }
        Ok(d)
    }

    /// Stores a file's contents by streaming them (memory does not grow with the file), returning the digest
    /// and size.
    pub fn put_blob_from_file(&self, src: &Path) -> Result<(Digest, u64), StoreError> {
        let mut input = std::fs::File::open(src).map_err(err(src))?;
        let mut writer = self.blob_writer()?;
        std::io::copy(&mut input, &mut writer).map_err(err(src))?;
        let size = writer.size();
        match writer.commit(None) {
            Ok(d) => Ok((d, size)),
            Err(BlobError::Store(e)) => Err(e),
            Err(BlobError::Mismatch { .. }) => Err(StoreError {
                path: src.to_owned(),
                source: std::io::Error::other("content changed while it was stored"),
            }),
        }
    }

    /// HMAC-SHA256 of `message` under this cache directory's secret key (made on first use, readable by
    /// the owner only). Used to tell secret values apart in IDs without putting them there.
    pub fn secret_mac(&self, message: &[u8]) -> Result<Digest, StoreError> {
        use hmac::Mac as _;
        let key_path = self.root.join("secret-key");
        let key = match std::fs::read(&key_path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let mut k = vec![0u8; 32];
                getrandom::fill(&mut k).map_err(|e| StoreError {
                    path: key_path.clone(),
                    source: std::io::Error::other(format!("no random bytes for the secret key: {e}")),
                })?;
                self.write_atomic_mode(&key_path, &k, 0o600, true)?;
                // Another engine may have won the race: use what is on disk.
                std::fs::read(&key_path).map_err(err(&key_path))?
            }
        };
        // HMAC takes a key of any length; a 32-byte key never fails.
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).map_err(|e| StoreError {
            path: key_path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        mac.update(message);
        Ok(Digest::from_bytes(&mac.finalize().into_bytes().into()))
    }

    /// The path of a blob.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(d.as_str())
    }

    /// Starts writing a blob whose content is streamed in; see [`BlobWriter`].
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = self.tmp_path("blob");
        let file = std::fs::File::create(&tmp).map_err(err(&tmp))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            blobs: self.root.join("blobs"),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The directory an image layer blob is extracted into.
    pub fn layer_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("layers").join(blob.as_str())
    }

    /// A fresh path under `tmp/` (`<what>.<pid>.<n>`: the process ID names its owner for collection).
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("{what}.{}.{}", std::process::id(), unique()))
    }

    /// Reads a blob.
    pub fn get_blob(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(d);
        std::fs::read(&path).map_err(err(&path))
    }

    /// Stores a JSON record in `kind` (`results` or `calls`). Records are not synced to disk one by one (a
    /// cold chain of 10,000 calls writes 20,000 of them): after a power loss a record may be empty, and an
    /// unreadable record is a cache miss.
    pub fn put_json<T: serde::Serialize>(&self, kind: &str, d: &Digest, value: &T) -> Result<(), StoreError> {
        let path = self.root.join(kind).join(d.as_str());
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.write_atomic(&path, &bytes, false)
    }

    /// Whether a JSON record exists.
    pub fn has_json(&self, kind: &str, d: &Digest) -> bool {
        self.root.join(kind).join(d.as_str()).is_file()
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

    /// Removes the least recently modified results, blobs and extracted layers until the store is at most
    /// `max_bytes`; a layer directory is removed whole. Calls (the ID registry) are kept: they are small, and
    /// IDs must stay loadable. `tmp/` is left alone: what is there belongs to running engines (their execs'
    /// mounts and scratch folders), or is collected by the next engine to start ([`crate::worker::cleanup`]). Returns
    /// bytes freed.
    pub fn prune(&self, max_bytes: u64) -> Result<u64, StoreError> {
        // (age key in seconds, size, path, is a directory)
        let mut entries: Vec<(i64, u64, PathBuf, bool)> = Vec::new();
        for kind in ["results", "blobs", "packed", "layers"] {
            let dir = self.root.join(kind);
            let rd = std::fs::read_dir(&dir).map_err(err(&dir))?;
            for e in rd.flatten() {
                let Ok(m) = e.path().symlink_metadata() else { continue };
                if m.is_dir() {
                    // A layer directory keeps the image's times; its change time is when it was extracted.
                    entries.push((m.ctime(), walk_size(&e.path()), e.path(), true));
                } else {
                    entries.push((m.mtime(), m.len(), e.path(), false));
                }
            }
        }
        let mut total = self.size();
        let mut freed = 0;
        entries.sort();
        for (_, len, path, is_dir) in entries {
            if total <= max_bytes {
                break;
            }
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if removed.is_ok() {
                total = total.saturating_sub(len);
                freed += len;
            }
        }
        Ok(freed)
    }
}

/// A blob being streamed into the store: bytes go to a file under `tmp/` while they are hashed, and
/// [`BlobWriter::commit`] renames it into `blobs/` only if the content has the expected digest. Dropping the
/// writer without committing removes the temporary file.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<std::fs::File>,
    tmp: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    size: u64,
}

/// Why a streamed blob was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// Writing or renaming failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The content's digest is not the expected one; nothing was stored.
    #[error("content has digest sha256:{actual}, but sha256:{expected} was expected; it was not stored")]
    Mismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the content written.
        actual: Digest,
    },
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::of_hasher(self.hasher.clone())
    }

    /// Finishes the blob: with `expected`, it is stored only if the content has that digest (otherwise the
    /// temporary file is removed and [`BlobError::Mismatch`] returned); without, it is stored under its own
    /// digest. An existing blob with that digest is kept.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest, BlobError> {
        let actual = self.digest();
        if let Some(expected) = expected
            && *expected != actual
        {
            return Err(BlobError::Mismatch {
                expected: expected.clone(),
                actual,
            });
        }
        if let Some(mut f) = self.file.take() {
            f.flush().map_err(err(&self.tmp))?;
            f.sync_all().map_err(err(&self.tmp))?;
        }
        let dest = self.blobs.join(actual.as_str());
        if !dest.is_file() {
            std::fs::rename(&self.tmp, &dest).map_err(err(&dest))?;
        }
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("blob writer already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the file was renamed away and this fails harmlessly.
        let _ = std::fs::remove_file(&self.tmp);
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

    /// The MAC is standard HMAC-SHA256 (RFC 2104) under the directory's key, so the `$mac` in recorded calls
    /// stays the same across versions and their results stay cache hits.
    #[test]
    fn secret_macs_are_hmac_sha256_under_the_directory_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let key: Vec<u8> = (0..32).collect();
        std::fs::write(dir.path().join("secret-key"), &key).expect("key");
        assert_eq!(
            store.secret_mac(b"hunter2").expect("mac").as_str(),
            "8629d712da366318588317f3f98c728c71d4819f843d95db8803c019c561c1e7"
        );

        // Without a key, one is made (32 random bytes, owner-only) and kept.
        let other = tempfile::tempdir().expect("tempdir");
        let store = Store::open(other.path()).expect("open");
        let first = store.secret_mac(b"x").expect("mac");
        let key = std::fs::read(other.path().join("secret-key")).expect("key");
        assert_eq!(key.len(), 32);
        assert_ne!(key, vec![0u8; 32]);
        assert_eq!(store.secret_mac(b"x").expect("mac"), first);
        assert_ne!(store.secret_mac(b"y").expect("mac"), first);
    }

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

    #[test]
    fn streamed_blobs_are_stored_only_when_the_digest_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let good = Digest::of(b"layer bytes");

        let mut w = store.blob_writer().expect("writer");
        w.write_all(b"layer ").expect("write");
        w.write_all(b"bytes").expect("write");
        assert_eq!(w.size(), 11);
        assert_eq!(w.commit(Some(&good)).expect("commit"), good);
        assert_eq!(store.get_blob(&good).expect("get"), b"layer bytes");

        let mut w = store.blob_writer().expect("writer");
        w.write_all(b"tampered bytes").expect("write");
        match w.commit(Some(&Digest::of(b"something else"))) {
            Err(BlobError::Mismatch { actual, .. }) => {
                assert_eq!(actual, Digest::of(b"tampered bytes"));
                assert!(!store.has_blob(&actual));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        // Neither the mismatch nor an abandoned writer leaves temporary files.
        drop(store.blob_writer().expect("writer"));
        assert!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none());
    }

    /// Whether the unprivileged user `nobody` can `stat` a path (`setpriv`, util-linux).
    fn nobody_can_stat(path: &Path) -> bool {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "stat"])
            .arg(path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run setpriv (util-linux)")
            .success()
    }

    #[test]
    fn other_users_cannot_reach_setuid_files_in_the_cache_directory() {
        use std::os::unix::fs::PermissionsExt;
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to switch to another user");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // A parent anyone may enter, as a home directory's `.cache` usually is.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;

        // A new cache directory.
        let fresh = dir.path().join("fresh");
        let store = Store::open(&fresh).expect("open");
        let suid = store.layer_path(&Digest::of(b"layer")).join("bin/su");
        std::fs::create_dir_all(suid.parent().expect("parent")).expect("mkdir");
        std::fs::write(&suid, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        assert!(nobody_can_stat(dir.path()), "the test user can reach the parent");
        assert!(
            !nobody_can_stat(&suid),
            "another user reached a set-user-ID file in the cache directory"
        );
        assert!(!nobody_can_stat(&fresh.join("layers")));
        assert_eq!(mode(&fresh), 0o700);
        for sub in SUBDIRS {
            assert_eq!(mode(&fresh.join(sub)), 0o700, "{sub}");
        }

        // A cache directory made by an earlier version, open to everyone: repaired when opened.
        let old = dir.path().join("old");
        let old_suid = old.join("layers/abc/bin/su");
        std::fs::create_dir_all(old_suid.parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(old.join("tmp")).expect("mkdir");
        for d in [&old, &old.join("layers"), &old.join("tmp")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(&old_suid, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&old_suid, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        assert!(
            nobody_can_stat(&old_suid),
            "the old layout is reachable (the test sees the defect)"
        );
        Store::open(&old).expect("open");
        assert!(
            !nobody_can_stat(&old_suid),
            "opening the store closed the cache directory"
        );
        assert_eq!(mode(&old), 0o700);
        assert_eq!(mode(&old.join("layers")), 0o700);
        assert_eq!(mode(&old.join("tmp")), 0o700);
    }

    #[test]
    fn a_cache_directory_owned_by_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to change a directory's owner");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
        let e = Store::open(&theirs).expect_err("refused").to_string();
        assert!(e.contains("owned by uid 65534") && e.contains("chown -R 0"), "{e}");
    }
}
