//! Unpacking a layer while its blob downloads.
//!
//! A pull used to store every blob first and only then unpack the layers, one after another: for a big
//! single-layer image the unpacking (decompression and writing the tree, CPU and disk) waited for the whole
//! download (network). [`Unpacking`] overlaps them: each chunk written to the blob is also handed, through a
//! bounded queue (so memory does not grow with the layer), to a thread that decompresses and unpacks it into a
//! directory under `tmp/`. Layers downloaded side by side are unpacked side by side.
//!
//! The unpacked tree is trusted only once the blob is: when the download ends and the stored blob's digest
//! is verified, the directory is renamed to the layer's place ([`Store::layer_path`]), where
//! [`extract_cached`](super::layer::extract_cached) finds it. A blob whose digest does not match, a download
//! that fails, or an unpacking that fails (a hostile tar) throws the directory away; the regular path then
//! unpacks from the stored blob and reports the error with its usual wording, so this is only ever a
//! shortcut.

use std::io::{self, Read};
use std::path::PathBuf;

use bytes::{Buf, Bytes};

use super::OciError;
use super::layer::{Extracted, decompress, extract_tar};
use crate::model::ids::Digest;
use crate::store::Store;

/// Chunks in flight between the download and the unpacking thread. A chunk of an HTTP/1 body on loopback can
/// be a few hundred KiB, so this bounds the memory a layer's unpacking holds to a few MiB.
const QUEUE: usize = 8;

/// The unpacking of one layer from its download (see the module docs).
pub(crate) struct Unpacking {
    /// Chunks go here; `None` once the unpacking stopped early (it failed) or the download ended.
    tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    task: Option<tokio::task::JoinHandle<Result<Extracted, OciError>>>,
    tmp: PathBuf,
}

impl Unpacking {
    /// Starts unpacking the layer whose blob is `blob`, unless it is unpacked already.
    pub(crate) fn start(store: &Store, blob: &Digest) -> Option<Self> {
        if store.layer_path(blob).is_dir() {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let tmp = store.tmp_path("layer");
        let dest = tmp.clone();
        let name = format!("sha256:{blob}");
        let task = tokio::task::spawn_blocking(move || {
            let chunks = io::BufReader::with_capacity(
                256 * 1024,
                Chunks {
                    rx,
                    chunk: Bytes::new(),
                },
            );
            let (_, reader) = decompress(chunks).map_err(OciError::io(&dest))?;
            extract_tar(reader, &name, &dest)
        });
        Some(Self {
            tx: Some(tx),
            task: Some(task),
            tmp,
        })
    }

    /// Hands the next chunk of the blob over (waiting while the queue is full). Once the unpacking has stopped
    /// early this does nothing: the regular path will unpack the stored blob and say what is wrong.
    pub(crate) async fn feed(&mut self, chunk: &Bytes) {
        if let Some(tx) = &self.tx
            && tx.send(chunk.clone()).await.is_err()
        {
            self.tx = None;
        }
    }

    /// Ends the unpacking. With `verified` (the whole blob is stored under its digest) and an unpacking that
    /// succeeded, its directory becomes the layer `blob`'s and what it left out is returned (nothing when
    /// another unpacking of the same blob got there first, which reports it); otherwise the directory is
    /// removed and `None` returned.
    pub(crate) async fn finish(mut self, store: &Store, blob: &Digest, verified: bool) -> Option<Extracted> {
        self.tx = None;
        let task = self.task.take()?;
        let result = task.await.ok();
        let tmp = self.tmp.clone();
        let dest = store.layer_path(blob);
        tokio::task::spawn_blocking(move || match result {
            Some(Ok(extracted)) if verified => match std::fs::rename(&tmp, &dest) {
                Ok(()) => Some(extracted),
                Err(_) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    dest.is_dir().then(Extracted::default)
                }
            },
            _ => {
                let _ = std::fs::remove_dir_all(&tmp);
                None
            }
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for Unpacking {
    /// A download that failed drops its unpacking unfinished: the thread sees the end of its input, stops,
    /// and its directory is removed (a killed engine's is collected from `tmp/` by the next one).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let tmp = self.tmp.clone();
            rt.spawn(async move {
                let _ = task.await;
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&tmp)).await;
            });
        }
    }
}

/// The chunks of a download as a byte stream: `read` waits for the next chunk; the end of the download (the
/// sender dropped) is the end of the stream.
struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzip-compressed layer tar of `files`.
    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            tar.append_data(&mut h, name, *data).expect("append");
        }
        let raw = tar.into_inner().expect("tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &raw).expect("gzip");
        gz.finish().expect("gzip")
    }

    async fn feed_all(u: &mut Unpacking, bytes: &[u8], chunk: usize) {
        for part in bytes.chunks(chunk) {
            u.feed(&Bytes::copy_from_slice(part)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_verified_download_leaves_its_layer_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let big = vec![7u8; 3 << 20];
        let blob = layer(&[("etc/hello", b"hi\n"), ("big.bin", &big)]);
        let digest = Digest::of(&blob);
        let mut u = Unpacking::start(&store, &digest).expect("not unpacked yet");
        feed_all(&mut u, &blob, 16 * 1024).await;
        let extracted = u.finish(&store, &digest, true).await.expect("unpacked");
        assert_eq!(extracted, Extracted::default());
        let layer = store.layer_path(&digest);
        assert_eq!(std::fs::read(layer.join("etc/hello")).expect("file"), b"hi\n");
        assert_eq!(std::fs::metadata(layer.join("big.bin")).expect("big").len(), 3 << 20);
        // Unpacked once: a second pull of the blob starts nothing.
        assert!(Unpacking::start(&store, &digest).is_none());
        assert!(
            std::fs::read_dir(dir.path().join("tmp")).expect("tmp").next().is_none(),
            "nothing left in tmp/"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unverified_blob_or_a_broken_tar_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let blob = layer(&[("a", b"1")]);
        let digest = Digest::of(&blob);
        // The digest did not match: the tree is thrown away.
        let mut u = Unpacking::start(&store, &digest).expect("start");
        feed_all(&mut u, &blob, 100).await;
        assert_eq!(u.finish(&store, &digest, false).await, None);
        assert!(!store.layer_path(&digest).exists());
        // Not a layer at all: the unpacking fails, feeding goes on harmlessly, nothing is kept.
        let junk = vec![0x1fu8, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut u = Unpacking::start(&store, &digest).expect("start");
        for _ in 0..200 {
            u.feed(&Bytes::from(junk.clone())).await;
        }
        assert_eq!(u.finish(&store, &digest, true).await, None);
        assert!(!store.layer_path(&digest).exists());
        // A download that failed midway: dropped unfinished, its directory goes too.
        let mut u = Unpacking::start(&store, &digest).expect("start");
        feed_all(&mut u, &blob[..blob.len() / 2], 10).await;
        drop(u);
        let tmp = dir.path().join("tmp");
        for _ in 0..100 {
            if std::fs::read_dir(&tmp).map(|mut d| d.next().is_none()).unwrap_or(true) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("tmp/ still holds {:?}", std::fs::read_dir(&tmp).map(|d| d.count()));
    }
}
